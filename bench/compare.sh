#!/usr/bin/env bash
# minnow against PyTorch on the same shapes, alternating, on this machine:
#   bash bench/compare.sh [ROUNDS]          (default 3 rounds)
#   MINNOW_ISA=avx2 bash bench/compare.sh 1 (minnow's kernels forced to a level, kernels/cpu.h)
# For each configuration, runs minnow's bench and PyTorch (Debian's python3-torch,
# /usr/bin/python3, NCHW and channels_last, fp32) ROUNDS times in turn, A B C A B C ...,
# with the same thread count, and prints the median img/s of each, the ratio
# minnow / fastest PyTorch, minnow's GFLOP/s as a fraction of the machine's FMA
# peak (bench/bench_peak.cpp, measured once at the start at the level minnow's
# kernels use and THREADS threads) and the peak memory; then BatchNorm2d's
# forward + backward alone (bench/bench_batchnorm.cpp) against PyTorch's, ROUNDS
# times in turn. Needs: apt-get install python3-torch, and the micro-benchmarks
# (cmake -B build -DMINNOW_BUILD_BENCH=ON).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
THREADS=${THREADS:-$(nproc)}
BENCH=${BENCH:-build/bench}
MICRO=${MICRO:-build/bench-micro/minnow_bench_micro}
PY=/usr/bin/python3
[ -x "$BENCH" ] || { echo "build first: cmake --build build --target bench" >&2; exit 1; }
[ -x "$MICRO" ] || { echo "build first: cmake -B build -DMINNOW_BUILD_BENCH=ON && cmake --build build --target minnow_bench_micro" >&2; exit 1; }
$PY -c "import torch" 2>/dev/null || { echo "needs Debian's PyTorch: apt-get install python3-torch" >&2; exit 1; }

configs=(
  "cnn batch train 128 10"
  "cnn none train 128 10"
  "resnet20 batch train 128 10"
  "cnn batch eval 1 100"
  "cnn batch eval 256 10"
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); threads $THREADS; $ROUNDS rounds"
info=$("$BENCH" --json --model cnn --norm none --mode eval --batch-size 1 --warmup 0 --steps 1 --threads 1)
echo "minnow: $($PY -c 'import json, sys; print(json.loads(sys.argv[1])["kernels"])' "$info")"
# The FMA peak of the vector width minnow's kernels use (at level generic, the
# CPU's widest: its convolutions are OpenBLAS GEMMs, which pick their own
# kernels), the best of 5 runs: other work on the machine only lowers it.
# (nan on a CPU without AVX2 + FMA, where bench_peak.cpp has nothing to run.)
peak=$(MINNOW_NUM_THREADS=$THREADS "$MICRO" --benchmark_format=json --benchmark_repetitions=5 \
    --benchmark_filter="^FmaPeak/.*/threads:$THREADS/" | $PY -c '
import json, sys
isa, gflops, out = json.loads(sys.argv[1])["isa"], {}, sys.stdin.read()
for b in json.loads(out)["benchmarks"] if out else []:  # nothing when no FmaPeak matched
    if b["run_type"] == "iteration":
        level = b["name"].split("/")[1]
        gflops[level] = max(gflops.get(level, 0), b["GFLOPs"])
if not gflops:
    sys.exit(print("nan none"))
level = {"generic": max(gflops, key=gflops.get), "avx2": "avx2"}.get(isa, "avx512")
print(gflops[level], level)' "$info")
read -r peak peak_level <<< "$peak"
printf "FMA peak: %.1f GFLOP/s (fp32, %s, %s threads, bench/bench_peak.cpp)\n" "$peak" "$peak_level" "$THREADS"
printf "%-26s %12s %12s %12s %8s %6s %10s %10s %10s\n" config minnow torch-nchw torch-cl ratio "%peak" "p50 ms" "p90 ms" "peak MB"
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
  $PY - "$tmp/$key" "$key" "$peak" <<'PY'
import json, statistics, sys
base, key, peak = sys.argv[1], sys.argv[2], float(sys.argv[3])
def load(s): return [json.loads(l) for l in open(base + "." + s)]
m, n, c = load("minnow"), load("nchw"), load("channels_last")
med = lambda rows, k: statistics.median(r[k] for r in rows)
best = max(med(n, "img_per_s"), med(c, "img_per_s"))
print(f"{key:26s} {med(m,'img_per_s'):12.1f} {med(n,'img_per_s'):12.1f} {med(c,'img_per_s'):12.1f} "
      f"{med(m,'img_per_s')/best:8.2f} {100*med(m,'gflops')/peak:5.1f}% {med(m,'ms_per_step_median'):10.2f} {med(m,'ms_per_step_p90'):10.2f} "
      f"{med(m,'peak_rss_mb'):6.0f}/{min(med(n,'peak_rss_mb'), med(c,'peak_rss_mb')):.0f}")
PY
done
echo "(img/s: medians over rounds; ratio: minnow / the faster PyTorch layout; %peak: minnow's GFLOP/s"
echo " over the FMA peak; p50/p90: minnow's step times; peak MB: minnow / the smaller PyTorch peak)"

# BatchNorm2d forward + backward on (128, 64, 32, 32) alone, alternately: minnow's
# node (its backward called directly, and through the engine with x a leaf, as
# PyTorch is timed) against torch.nn.BatchNorm2d.
case $THREADS in
  1|2) ;;
  *) echo "BatchNorm2d: skipped, bench/bench_batchnorm.cpp times 1 and 2 threads only"; exit 0 ;;
esac
for r in $(seq "$ROUNDS"); do
  "$MICRO" --benchmark_format=json --benchmark_filter="^BatchNorm2d_FwdBwd(_Engine)?/$THREADS/" > "$tmp/bn.minnow.$r"
  $PY bench/pytorch_bench.py --what batchnorm --batch-size 128 --threads "$THREADS" --steps 20 >> "$tmp/bn.torch"
done
$PY - "$tmp/bn" "$THREADS" <<'PY'
import glob, json, statistics, sys
base, threads = sys.argv[1], sys.argv[2]
ms = {}  # benchmark -> its time (ms) in each round
for f in glob.glob(base + ".minnow.*"):
    for b in json.load(open(f))["benchmarks"]:
        ms.setdefault(b["name"].split("/")[0], []).append(b["real_time"])
torch = statistics.median(json.loads(l)["ms_per_step_median"] for l in open(base + ".torch"))
print(f"BatchNorm2d forward + backward, (128, 64, 32, 32), {threads} threads: PyTorch {torch:.2f} ms")
for name, how in (("BatchNorm2d_FwdBwd", "node's backward"), ("BatchNorm2d_FwdBwd_Engine", "through the engine")):
    if name in ms:
        print(f"  minnow, {how:18s} {statistics.median(ms[name]):6.2f} ms: PyTorch / minnow {torch / statistics.median(ms[name]):.2f}x")
PY
