#!/usr/bin/env bash
# End-to-end checks of the apps on a tiny generated CIFAR-10 binary folder:
#   apps_test.sh BUILD_DIR WORK_DIR
# determinism (same seed, no shuffle, no augment: identical weights), resume
# (a run stopped after epoch 1 and resumed ends with the same weights as an
# uninterrupted one, also after its metrics log was torn), a resume refusing a
# contradicting flag, evaluate, a diverging run stopping cleanly, and errors
# (missing and misplaced files, failed writes).
set -euo pipefail
build=$1; work=$2
rm -rf "$work"; mkdir -p "$work"
fail() { echo "FAILED: $*" >&2; exit 1; }
"$build/tests/make_tiny_cifar" "$work/cifar" 16
train=("$build/train_cifar" --data "$work/cifar" --batch-size 16 --threads 2 --no-cache --milestones 1 --test-limit 20)

echo "--- determinism: two runs, fixed seed, no shuffle, no augmentation"
for r in a b; do
  "${train[@]}" --epochs 2 --no-shuffle --no-augment --seed 3 --out "$work/$r" --save "$work/$r/final.safetensors" > "$work/$r.log"
done
cmp "$work/a/final.safetensors" "$work/b/final.safetensors" || fail "two identical runs gave different weights"
grep -q "^epoch,lr,train_loss" "$work/a/metrics.csv" || fail "metrics.csv header"
[ "$(wc -l < "$work/a/metrics.csv")" = 3 ] || fail "metrics.csv should have a header and 2 epochs"

echo "--- resume: 1 epoch, then --resume to 2, against 2 straight (shuffle and augmentation on)"
"${train[@]}" --epochs 2 --seed 5 --out "$work/straight" --save "$work/straight/final.safetensors" > "$work/straight.log"
"${train[@]}" --epochs 1 --seed 5 --out "$work/resumed" > "$work/resumed1.log"
"${train[@]}" --epochs 2 --seed 5 --out "$work/resumed" --resume --save "$work/resumed/final.safetensors" > "$work/resumed2.log"
grep -q "resumed from" "$work/resumed2.log" || fail "the second run did not resume"
cmp "$work/straight/final.safetensors" "$work/resumed/final.safetensors" || fail "resumed run differs from the uninterrupted one"
cmp "$work/straight/metrics.csv" "$work/resumed/metrics.csv" > /dev/null || \
  diff <(cut -d, -f1-8 "$work/straight/metrics.csv") <(cut -d, -f1-8 "$work/resumed/metrics.csv") || fail "metrics differ after resume"

echo "--- a resume with a torn metrics log and a garbage row: the logs are rewritten from the checkpoint"
"${train[@]}" --epochs 1 --seed 5 --out "$work/torn" > /dev/null
echo "garbage,row" >> "$work/torn/metrics.csv"
head -c 40 "$work/torn/metrics.jsonl" > "$work/torn/x" && mv "$work/torn/x" "$work/torn/metrics.jsonl"
"${train[@]}" --epochs 2 --seed 5 --out "$work/torn" --resume --save "$work/torn/final.safetensors" > "$work/torn.log"
cmp "$work/straight/final.safetensors" "$work/torn/final.safetensors" || fail "resume after a torn log differs"
diff <(cut -d, -f1-8 "$work/straight/metrics.csv") <(cut -d, -f1-8 "$work/torn/metrics.csv") || fail "torn log not rewritten"
[ "$(wc -l < "$work/torn/metrics.jsonl")" = 2 ] || fail "metrics.jsonl not rewritten"

echo "--- a resume takes the checkpoint's recipe and refuses a flag that contradicts it"
set +e
"${train[@]}" --epochs 3 --seed 5 --out "$work/torn" --resume --lr 0.001 > /dev/null 2> "$work/conflict.err"; c=$?
set -e
[ "$c" = 2 ] || fail "a contradicting --lr on resume exited $c, expected 2"
grep -q -- "--lr 0.001 contradicts.*lr 0.1" "$work/conflict.err" || { cat "$work/conflict.err"; fail "conflict message"; }

echo "--- --steps stops early"
"${train[@]}" --epochs 5 --steps 3 --out "$work/steps" --save "$work/steps/final.safetensors" > "$work/steps.log"
grep -q "stopped by --steps" "$work/steps.log" || fail "--steps"

echo "--- evaluate, with logits dumped"
"$build/evaluate" --checkpoint "$work/a/checkpoint.safetensors" --data "$work/cifar" > "$work/eval_ckpt.log"
grep -q "test accuracy" "$work/eval_ckpt.log" || fail "evaluate of a training checkpoint"
"$build/evaluate" --checkpoint "$work/a/final.safetensors" --data "$work/cifar" --dump-logits "$work/logits.safetensors" > "$work/eval.log"
grep -q "test accuracy" "$work/eval.log" || fail "evaluate output"
echo "--- evaluate --int8 (calibrated on training images), bench --int8"
"$build/evaluate" --checkpoint "$work/a/final.safetensors" --data "$work/cifar" --int8 --calibration 20 \
  > "$work/eval_int8.log" || fail "evaluate --int8"
grep -q "norm batch, int8" "$work/eval_int8.log" || fail "evaluate --int8 output"
code=0
"$build/evaluate" --checkpoint "$work/a/final.safetensors" --data "$work/cifar" --calibration 20 \
  > /dev/null 2> "$work/err_int8" || code=$?
[ "$code" = 2 ] && grep -q "int8" "$work/err_int8" || fail "evaluate --calibration without --int8 is not refused"
"$build/bench" --model cnn --mode eval --int8 --batch-size 1 --image-size 40 --steps 2 --warmup 1 --json \
  > "$work/bench_int8.json" || fail "bench --int8"
grep -q '"int8":true' "$work/bench_int8.json" || fail "bench --int8 json"
code=0
"$build/bench" --model cnn --int8 > /dev/null 2> "$work/err_int8" || code=$?
[ "$code" != 0 ] && grep -q "mode eval" "$work/err_int8" || fail "bench --int8 in train mode is not refused"
[ -s "$work/logits.safetensors" ] || fail "no logits file"
# evaluate reports the test loss of the run's last epoch, with the run's own normalisation.
"${train[@]}" --epochs 1 --mean 0.5,0.5,0.5 --std 0.25,0.25,0.25 --out "$work/norm" --save "$work/norm/final.safetensors" > /dev/null
for f in "$work/norm/checkpoint.safetensors" "$work/norm/final.safetensors"; do
  "$build/evaluate" --checkpoint "$f" --data "$work/cifar" --test-limit 20 > "$work/eval_norm.log"
  got=$(sed -n 's/.*mean cross-entropy \([0-9.]*\).*/\1/p' "$work/eval_norm.log")
  want=$(awk -F, 'NR == 2 { printf "%.4f", $5 }' "$work/norm/metrics.csv")
  # The same images and weights; the batches differ (evaluate's 256, training's
  # 16), and so may the float sums' last digits (seen: 3.7739 against 3.7738).
  # Another normalisation would be far off.
  awk -v a="$got" -v b="$want" 'BEGIN { d = a - b; exit !(a != "" && d <= 2e-4 && d >= -2e-4) }' ||
    fail "evaluate of $f: test loss $got, the run's last epoch had $want"
done

echo "--- a diverging run stops with the step and the layer, keeping its last checkpoint"
cp "$work/a/checkpoint.safetensors" "$work/a.ckpt.copy"
set +e
"${train[@]}" --norm none --epochs 3 --lr 1e12 --out "$work/nan" > "$work/nan.log" 2> "$work/nan.err"
code=$?
set -e
[ "$code" = 3 ] || { cat "$work/nan.err"; fail "diverging run exited $code, expected 3"; }
grep -q "diverged at step" "$work/nan.err" || fail "no step in the divergence message"
grep -q "features\|classifier\|gradient" "$work/nan.err" || fail "no layer named in the divergence message"

echo "--- errors are messages, not crashes"
set +e
"$build/train_cifar" --data "$work/nowhere" > /dev/null 2> "$work/err1"; c1=$?
"$build/evaluate" --checkpoint "$work/nowhere.safetensors" > /dev/null 2> "$work/err2"; c2=$?
"$build/evaluate" --checkpoint "$work/a" > /dev/null 2> "$work/err3"; c3=$?
"${train[@]}" --save "$work/a/metrics.csv/final.safetensors" --out "$work/w1" > /dev/null 2> "$work/err4"; c4=$?
mkdir -p "$work/w2/metrics.csv"
"${train[@]}" --epochs 1 --out "$work/w2" > /dev/null 2> "$work/err5"; c5=$?
"${train[@]}" --epochs 1 --out "$work/w3" > /dev/full 2> "$work/err6"; c6=$?
mkdir -p "$work/w4/checkpoint.safetensors"
"${train[@]}" --epochs 1 --out "$work/w4" --resume > /dev/null 2> "$work/err7"; c7=$?
set -e
[ "$c1" = 2 ] && grep -q "nowhere" "$work/err1" || fail "missing --data"
[ "$c2" = 1 ] && grep -q "nowhere.safetensors" "$work/err2" || fail "missing checkpoint"
[ "$c3" = 1 ] && grep -q "is a directory" "$work/err3" || { cat "$work/err3"; fail "a folder as the checkpoint"; }
[ "$c4" = 2 ] && grep -q -- "--save" "$work/err4" || { cat "$work/err4"; fail "--save in a folder that is a file"; }
[ "$c5" = 1 ] && grep -q "metrics.csv" "$work/err5" || { cat "$work/err5"; fail "metrics.csv that cannot be written"; }
[ "$c6" = 1 ] && grep -q "cannot write the output" "$work/err6" || { cat "$work/err6"; fail "stdout on a full disk"; }
[ "$c7" = 2 ] && grep -q "checkpoint.safetensors: is a folder" "$work/err7" || { cat "$work/err7"; fail "a folder as OUT/checkpoint"; }
echo "apps: all checks passed"
