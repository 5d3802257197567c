#!/usr/bin/env bash
# Serves the page on http://127.0.0.1:${PORT:-8080}/, building it first if
# web/dist/ is missing. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")"
[ -f dist/index.html ] || bash build.sh
echo "the BatchNorm page: http://127.0.0.1:${PORT:-8080}/"
exec npx --no-install vite preview --host 127.0.0.1 --port "${PORT:-8080}" --strictPort
