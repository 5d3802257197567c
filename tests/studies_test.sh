#!/usr/bin/env bash
# Smoke checks of the BatchNorm study apps on a tiny generated CIFAR-10 binary
# folder: each runs end to end at a toy budget and writes its CSVs, figures
# and summary.md; a diverging run in the lr sweep is recorded, not fatal.
#   studies_test.sh BUILD_DIR WORK_DIR
# (The numbers at this budget mean nothing; the real runs are in docs/studies/.)
set -euo pipefail
build=$1; work=$2
rm -rf "$work"; mkdir -p "$work"
fail() { echo "FAILED: $*" >&2; exit 1; }
"$build/tests/make_tiny_cifar" "$work/cifar" 8
common=(--data "$work/cifar" --threads 2 --train-limit 40 --test-limit 20)
has() { [ -s "$1" ] || fail "$1 missing or empty"; }
rows() { [ "$(($(wc -l < "$1") - 1))" = "$2" ] || fail "$1: expected $2 rows, got $(($(wc -l < "$1") - 1))"; }

echo "--- lr sweep: a huge lr diverges, is recorded, and the sweep carries on"
"$build/study_lr_sweep" "${common[@]}" --epochs 1 --batch-size 8 --norms none,batch --lrs 1e12,0.01 \
  --out "$work/lr" > "$work/lr.log"
rows "$work/lr/sweep.csv" 4
grep -q "^none,1e+12,.*,0,[1-9][0-9]*," "$work/lr/sweep.csv" || fail "the diverged run has no step in sweep.csv"
grep -q "^batch,0.01,[0-9.]*,.*,1,0," "$work/lr/sweep.csv" || fail "a run after the divergence did not complete"
grep -q "diverged: lr=1e+12" "$work/lr/summary.md" || fail "the summary does not report the divergence"
has "$work/lr/runs/none-lr1e+12-steps.csv"

echo "--- running-statistics momentum under shift"
"$build/study_bn_momentum" "${common[@]}" --epochs 2 --batch-size 8 --momenta 0.1,0.5 --pop-images 40 \
  --out "$work/mom" > "$work/mom.log"
rows "$work/mom/runs/momentum-0.1.csv" 2
rows "$work/mom/adaptation.csv" 16   # 2 momenta x 8 re-estimation lengths
rows "$work/mom/running_stats.csv" 20  # 2 momenta x 2 epochs x 5 BatchNorm layers
has "$work/mom/summary.md"

echo "--- batch size 1"
"$build/study_batch1" "${common[@]}" --epochs 1 --batch-size 8 --norms batch,gated,layer --out "$work/b1" > "$work/b1.log"
rows "$work/b1/results.csv" 3
rows "$work/b1/gates.csv" 10   # 2 gated runs x 5 layers
has "$work/b1/runs/gated-b1.csv"

echo "--- initial weight scale"
"$build/study_init_scale" "${common[@]}" --epochs 1 --batch-size 8 --norms batch,none --scales 0.1,10 \
  --out "$work/init" > "$work/init.log"
rows "$work/init/results.csv" 4

echo "--- batch-statistics noise"
"$build/study_batch_noise" --data "$work/cifar" --threads 2 --train-limit 40 --batch-sizes 2,4,8 --batches 20 \
  --probe-batches 5 --out "$work/noise" > "$work/noise.log"
has "$work/noise/summary.md"

echo "--- inference: fp32, BatchNorm folded, bf16, int8 (a model trained for 2 steps)"
"$build/train_cifar" --data "$work/cifar" --threads 2 --no-cache --batch-size 8 --epochs 1 --steps 2 \
  --out "$work/model" --save "$work/model/final.safetensors" > "$work/model.log"
"$build/study_inference" --checkpoint "$work/model/final.safetensors" --data "$work/cifar" --threads 2 \
  --test-limit 20 --iters 4 --throughput-iters 1 --throughput-batch 16 --rounds 2 --out "$work/infer" > "$work/infer.log"
has "$work/infer/summary.md"
has "$work/infer/accuracy.csv"
has "$work/infer/latency.csv"
for v in int8 int8-minmax int8-percentile; do
  grep -q "^$v," "$work/infer/accuracy.csv" || fail "study_inference: no accuracy of $v"
done
grep -q "^int8,128x128,1," "$work/infer/latency.csv" || fail "study_inference: no 128x128 latency of int8"

if command -v gnuplot > /dev/null; then
  for f in lr/test_accuracy.png lr/step_loss.png mom/adaptation.png b1/test_accuracy.png init/step_loss.png; do
    has "$work/$f"
  done
fi
echo "studies: all checks passed"
