#!/usr/bin/env bash
# The page's tests: builds it (web/build.sh), checks that the WebAssembly
# BatchNorm and LayerNorm give the native build's outputs and gradients
# (within 1e-6), then drives the page in Debian's chromium (playwright-core):
# web/tests/page.test.mjs. Screenshots go to ${SCREENSHOTS:-web/screenshots}.
set -euo pipefail
cd "$(dirname "$0")/.."
NATIVE=${NATIVE_BUILD:-build}
bash web/build.sh
echo "=== web: parity of the WebAssembly module with the native build"
out=$(mktemp -d)
trap 'rm -rf "$out"; [ -n "${server:-}" ] && kill "$server" 2>/dev/null || true' EXIT
"$NATIVE/web_parity" > "$out/native.json"
node web/tests/parity.mjs web/public/wasm/minnow_web.mjs "$out/native.json"

echo "=== web: the page in chromium"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# vite itself, not through npx: npx would leave it running when the trap kills npx.
(cd web && exec node node_modules/vite/bin/vite.js preview --host 127.0.0.1 --port "$port" --strictPort) \
  > "$out/server.log" 2>&1 &
server=$!
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$port/" >/dev/null && break
  sleep 0.2
done
SCREENSHOTS=${SCREENSHOTS:-$PWD/web/screenshots} node web/tests/page.test.mjs "http://127.0.0.1:$port/"
