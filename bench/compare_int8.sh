#!/usr/bin/env bash
# minnow's int8 inference against PyTorch's int8 paths, alternating, on this machine:
#   bash bench/compare_int8.sh [ROUNDS] [CHECKPOINT]     (default 3 rounds, random weights)
#   THREADS=1 bash bench/compare_int8.sh 5 results/cnn-batch/checkpoint.safetensors
# For batch 1 at 32x32 and 128x128 and batch 256 at 32x32, ROUNDS times in
# turn: minnow's `bench --mode eval --int8` (layers/int8_model.h), then
# PyTorch's int8-static and int8-dynamic (bench/pytorch_inference.py --time:
# FX post-training quantization, and quantize_dynamic of the classifier), each
# a fresh process with the same thread count and the same number of timed
# passes. Prints per shape the medians over the rounds of each side's p50 (and
# p90), and how many times faster minnow's int8 is than PyTorch's faster int8.
# Each side calibrates on random images here: the time does not depend on the
# scales (the accuracy is study 6's, on real images). Needs: apt-get install
# python3-torch.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
CHECKPOINT=${2:-}
THREADS=${THREADS:-$(nproc)}
BENCH=${BENCH:-build/bench}
PY=/usr/bin/python3
[ -x "$BENCH" ] || { echo "build first: cmake --build build --target bench" >&2; exit 1; }
$PY -c "import torch" 2>/dev/null || { echo "needs Debian's PyTorch: apt-get install python3-torch" >&2; exit 1; }
[ -z "$CHECKPOINT" ] || [ -f "$CHECKPOINT" ] || { echo "no checkpoint $CHECKPOINT" >&2; exit 1; }

shapes=("32 1 300" "128 1 200" "32 256 10")  # image size, batch, timed passes
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
info=$("$BENCH" --json --model cnn --norm batch --mode eval --int8 --batch-size 1 --warmup 0 --steps 1 --threads 1)
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'avx2|avx512f|avx512_vnni|avx_vnni|amx_int8' | xargs)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ($flags); threads $THREADS; $ROUNDS rounds"
echo "minnow: $($PY -c 'import json, sys; j = json.loads(sys.argv[1]); print(j["kernels"])' "$info")"
ckpt=()
[ -z "$CHECKPOINT" ] || ckpt=(--checkpoint "$CHECKPOINT")
for r in $(seq "$ROUNDS"); do
  for shape in "${shapes[@]}"; do
    read -r size batch passes <<< "$shape"
    key="s$size-b$batch"
    "$BENCH" --json --model cnn --norm batch --mode eval --int8 --image-size "$size" --batch-size "$batch" \
      --warmup 2 --steps "$passes" --threads "$THREADS" >> "$tmp/$key.minnow"
    for v in int8-static int8-dynamic; do
      $PY bench/pytorch_inference.py "${ckpt[@]}" --threads "$THREADS" --iters "$passes" --time "$v" "$size" "$batch" \
        2> "$tmp/py.err" | tail -1 >> "$tmp/$key.$v" || { cat "$tmp/py.err" >&2; exit 1; }
    done
  done
done
$PY - "$tmp" "$THREADS" "${shapes[@]}" <<'EOF'
import json, statistics, sys
tmp, threads, shapes = sys.argv[1], sys.argv[2], sys.argv[3:]
def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
engine = ""
print(f"{'input':18s} {'minnow int8':>22s} {'pytorch int8-static':>22s} {'pytorch int8-dynamic':>22s} {'ratio':>6s}")
for shape in shapes:
    size, batch, _ = shape.split()
    key = f"s{size}-b{batch}"
    cells, p50 = [], {}
    for side in ("minnow", "int8-static", "int8-dynamic"):
        r = rows(f"{tmp}/{key}.{side}")
        engine = r[0].get("quantized_engine", engine)
        p50[side] = statistics.median(x["ms_per_step_median"] for x in r)
        p90 = statistics.median(x["ms_per_step_p90"] for x in r)
        cells.append(f"{p50[side]:8.3f} / {p90:8.3f} ms" if batch == "1" else
                     f"{int(batch) / p50[side] * 1e3:14.0f} img/s")
    best = min(p50["int8-static"], p50["int8-dynamic"])
    print(f"{size}x{size}, batch {batch:3s}  {cells[0]:>22s} {cells[1]:>22s} {cells[2]:>22s} {best / p50['minnow']:6.2f}")
print(f"(batch 1: p50 / p90, the medians over the rounds; ratio: PyTorch's faster int8 time / minnow's; "
      f"PyTorch's quantized engine: {engine}; {threads} threads)")
EOF
