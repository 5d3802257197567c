#!/usr/bin/env bash
# The main job: the BatchNorm experiment on CIFAR-10, end to end.
#
#   bash apps/run_experiment.sh            # set up, build, train both models, plot, summarise
#
# Trains the reference `cnn` with BatchNorm and without (the recipe of
# ../shared/reference/models.py: 20 epochs, batch 128, SGD lr 0.1, momentum
# 0.9, weight decay 5e-4, lr /10 at epochs 10 and 15, crop+flip), then writes
# into results/ (or $RESULTS):
#   cnn-batch/, cnn-none/      metrics.csv, metrics.jsonl, checkpoint.safetensors, final.safetensors
#   train_loss.png, test_accuracy.png, grad_norm.png
#   summary.md                 the table of both runs and what they show
# Running it again resumes unfinished runs from their last checkpoint.
#
# Environment: EPOCHS (20), RESULTS (results), DATA (auto: ./data/cifar-10-batches-bin
# or ../shared/data/cifar10), PARALLEL=1 to train both models at once with one
# thread each (default: one after the other with every core), EXTRA (more
# train_cifar flags, e.g. "--train-limit 5000").
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-20}
RESULTS=${RESULTS:-results}
PARALLEL=${PARALLEL:-0}
EXTRA=${EXTRA:-}
data_flag=(); [ -n "${DATA:-}" ] && data_flag=(--data "$DATA")

bash .ci/install-deps
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target train_cifar evaluate

train() {  # train NORM [THREADS] (no THREADS: MINNOW_NUM_THREADS or every core)
  local norm=$1 out="$RESULTS/cnn-$1" threads_flag=()
  [ -n "${2:-}" ] && threads_flag=(--threads "$2")
  mkdir -p "$out"
  # shellcheck disable=SC2086
  ./build/train_cifar --model cnn --norm "$norm" --epochs "$EPOCHS" --out "$out" --resume \
      --save "$out/final.safetensors" "${threads_flag[@]}" "${data_flag[@]}" $EXTRA 2>&1 | tee -a "$out/train.log"
}

status=0
if [ "$PARALLEL" = 1 ]; then
  train batch 1 > /dev/null & pb=$!
  train none 1 & pn=$!
  wait $pb || status=$?
  wait $pn || status=$?
else
  train batch || status=$?
  train none || status=$?   # a diverged run (exit 3) is a result, not a reason to stop
fi

bash apps/plot_runs.sh "$RESULTS" "$RESULTS/cnn-batch=with BatchNorm" "$RESULTS/cnn-none=without normalisation"
bash apps/summarize_runs.sh "$RESULTS" cnn-batch cnn-none > "$RESULTS/summary.md"
cat "$RESULTS/summary.md"
exit $status
