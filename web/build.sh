#!/usr/bin/env bash
# Builds the interactive BatchNorm page into web/dist/ (serve it with
# web/serve.sh; it needs no network once built):
#   1. natively (build/): web_data, web_parity and train_cifar;
#   2. the checkpoint whose first convolution panel 1 shows: $CHECKPOINT, else
#      the main experiment's (results/cnn-batch/final.safetensors), else one
#      trained here on 10,000 CIFAR-10 images for one epoch (a minute or two
#      on two cores; kept in results/web-checkpoint/ for the next build);
#   3. the page's data from CIFAR-10 and that checkpoint (web/public/data/);
#   4. minnow's page module with Debian's emscripten (build-wasm/ ->
#      web/public/wasm/);
#   5. the page with Vite (npm ci: the packages of web/package-lock.json).
# Environment: CHECKPOINT, DATA (CIFAR-10, as for the apps), NATIVE_BUILD (build),
# WASM_BUILD (build-wasm).
set -euo pipefail
cd "$(dirname "$0")/.."
NATIVE=${NATIVE_BUILD:-build}
WASM=${WASM_BUILD:-build-wasm}
for tool in emcmake npm; do
  command -v "$tool" >/dev/null || { echo "web/build.sh: '$tool' is missing: bash .ci/install-deps" >&2; exit 1; }
done
# Debian's emscripten 3.1.6 runs its JavaScript optimiser with whatever node
# is first on PATH; a node that is not Debian's own does not look in
# /usr/share/nodejs, where Debian keeps the optimiser's modules (acorn).
export NODE_PATH=/usr/share/nodejs${NODE_PATH:+:$NODE_PATH}

echo "=== web: native tools ($NATIVE)"
cmake -S . -B "$NATIVE" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$NATIVE" -j"$(nproc)" --target web_data web_parity train_cifar

data_flag=()
[ -n "${DATA:-}" ] && data_flag=(--data "$DATA")
ckpt=${CHECKPOINT:-}
if [ -z "$ckpt" ] && [ -f results/cnn-batch/final.safetensors ]; then ckpt=results/cnn-batch/final.safetensors; fi
if [ -z "$ckpt" ]; then
  ckpt=results/web-checkpoint/final.safetensors
  if [ ! -f "$ckpt" ]; then
    echo "=== web: no checkpoint given: training the BatchNorm cnn for 1 epoch on 10,000 images"
    "$NATIVE/train_cifar" --model cnn --norm batch --epochs 1 --train-limit 10000 --test-limit 1000 \
      --out results/web-checkpoint --save "$ckpt" "${data_flag[@]}" | tail -n 3
  fi
fi
[ -f "$ckpt" ] || { echo "web/build.sh: checkpoint $ckpt does not exist" >&2; exit 1; }

echo "=== web: data from $ckpt"
mkdir -p web/public/data web/public/wasm
"$NATIVE/web_data" --checkpoint "$ckpt" --out web/public/data "${data_flag[@]}"

echo "=== web: the WebAssembly module ($WASM)"
emcmake cmake -S . -B "$WASM" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$WASM" -j"$(nproc)" --target minnow_web
cp "$WASM/web/minnow_web.mjs" "$WASM/web/minnow_web.wasm" web/public/wasm/

echo "=== web: the page (web/dist)"
cd web
npm ci --no-audit --no-fund --loglevel=error
npm run build --silent
echo "web/build.sh: built web/dist (serve it: bash web/serve.sh)"
