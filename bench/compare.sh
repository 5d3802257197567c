#!/usr/bin/env bash
# minnow against PyTorch on the same shapes, alternating, on this machine:
#   bash bench/compare.sh [ROUNDS]          (default 3 rounds)
#   MINNOW_ISA=avx2 bash bench/compare.sh 1 (minnow's kernels forced to a level, kernels/cpu.h)
# For each configuration, runs minnow's bench and PyTorch (Debian's python3-torch,
# /usr/bin/python3, NCHW and channels_last, fp32) ROUNDS times in turn, A B C A B C ...,
# with the same thread count, and prints the median img/s of each, the ratio
# minnow / fastest PyTorch, and the peak memory. Needs: apt-get install python3-torch.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
THREADS=${THREADS:-$(nproc)}
BENCH=${BENCH:-build/bench}
PY=/usr/bin/python3
[ -x "$BENCH" ] || { echo "build first: cmake --build build --target bench" >&2; exit 1; }
$PY -c "import torch" 2>/dev/null || { echo "needs Debian's PyTorch: apt-get install python3-torch" >&2; exit 1; }

configs=(
  "cnn batch train 128 10"
  "cnn none train 128 10"
  "resnet20 batch train 128 10"
  "cnn batch eval 1 100"
  "cnn batch eval 256 10"
)
tmp=$(mktemp -d)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); threads $THREADS; $ROUNDS rounds"
echo "minnow: $("$BENCH" --json --model cnn --norm none --mode eval --batch-size 1 --warmup 0 --steps 1 --threads 1 | $PY -c 'import json, sys; print(json.load(sys.stdin)["kernels"])')"
printf "%-26s %12s %12s %12s %8s %10s %10s %10s\n" config minnow torch-nchw torch-cl ratio "p50 ms" "p90 ms" "peak MB"
for cfg in "${configs[@]}"; do
  read -r model norm mode batch steps <<< "$cfg"
  key="$model-$norm-$mode-b$batch"
  for r in $(seq "$ROUNDS"); do
    "$BENCH" --json --model "$model" --norm "$norm" --mode "$mode" --batch-size "$batch" --steps "$steps" --threads "$THREADS" >> "$tmp/$key.minnow"
    for layout in nchw channels_last; do
      $PY bench/pytorch_bench.py --model "$model" --norm "$norm" --mode "$mode" --batch-size "$batch" --steps "$steps" \
          --threads "$THREADS" --layout "$layout" >> "$tmp/$key.$layout"
    done
  done
  $PY - "$tmp/$key" "$key" <<'PY'
import json, statistics, sys
base, key = sys.argv[1], sys.argv[2]
def load(s): return [json.loads(l) for l in open(base + "." + s)]
m, n, c = load("minnow"), load("nchw"), load("channels_last")
med = lambda rows, k: statistics.median(r[k] for r in rows)
best = max(med(n, "img_per_s"), med(c, "img_per_s"))
print(f"{key:26s} {med(m,'img_per_s'):12.1f} {med(n,'img_per_s'):12.1f} {med(c,'img_per_s'):12.1f} "
      f"{med(m,'img_per_s')/best:8.2f} {med(m,'ms_per_step_median'):10.2f} {med(m,'ms_per_step_p90'):10.2f} "
      f"{med(m,'peak_rss_mb'):6.0f}/{min(med(n,'peak_rss_mb'), med(c,'peak_rss_mb')):.0f}")
PY
done
echo "(img/s: medians over rounds; ratio: minnow / the faster PyTorch layout; p50/p90: minnow's step times;"
echo " peak MB: minnow / the smaller PyTorch peak)"
rm -rf "$tmp"
