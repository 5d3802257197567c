#!/usr/bin/env bash
# Every numeric flag of every app and study, given 0, a negative, a huge and
# a non-numeric value: each run must end with a message and one of the exit
# codes of apps/flags.h (0 done, 1 failed, 2 bad command line, 3 diverged),
# never a signal, a timeout or a sanitizer report; a refused value (2) must be
# named in the message. The flags are read from each program's --help, so a
# flag added later is covered without editing this file.
#   flags_test.sh BUILD_DIR WORK_DIR
# With FLAGS_TEST_TIME_LIMIT=S (the sanitizer build sets it: a study's full
# run takes minutes there), a run that got past its checks and was still
# working after S seconds counts as clean.
set -uo pipefail
build=$1; work=$2
rm -rf "$work"; mkdir -p "$work"
fail() { echo "FAILED: $*" >&2; exit 1; }
# 50 training and 10 test images: "0: all" stays cheap.
"$build/tests/make_tiny_cifar" "$work/cifar" 10 > /dev/null || fail "make_tiny_cifar"
data=(--data "$work/cifar")
"$build/train_cifar" "${data[@]}" --no-cache --no-progress --threads 2 --epochs 1 --batch-size 10 \
  --train-limit 10 --test-limit 10 --out "$work/trained" > /dev/null || fail "the checkpoint for evaluate"
ckpt="$work/trained/checkpoint.safetensors"

# Each program with the flags that keep a valid run to a second or two
# ("flag value" pairs; the flag under test replaces its pair).
declare -A base
base[train_cifar]="--out $work/out-train --data $work/cifar --no-cache --no-progress --threads 2 --epochs 1 --batch-size 10 --train-limit 10 --test-limit 10 --milestones 1"
base[evaluate]="--checkpoint $ckpt --data $work/cifar --test-limit 10 --threads 2"
base[bench]="--model cnn --batch-size 2 --steps 1 --warmup 0 --threads 2"
study="--out $work/out-study --data $work/cifar --threads 2 --epochs 1 --batch-size 10 --train-limit 10 --test-limit 10"
base[study_lr_sweep]="$study --norms batch --lrs 0.1"
base[study_bn_momentum]="$study --momenta 0.1 --pop-images 10"
base[study_batch1]="$study --norms batch"
base[study_init_scale]="$study --norms batch --scales 1"
base[study_batch_noise]="--out $work/out-noise --data $work/cifar --threads 2 --train-limit 10 --batch-sizes 2,4 --batches 2 --probe-batches 2 --demo-images 2"
base[web_data]="--checkpoint $ckpt --data $work/cifar --cache-dir $work/cache --out $work/out-web --pool 4 --train 20 --test 4 --shown 2"
base[study_inference]="--out $work/out-inference --checkpoint $ckpt --data $work/cifar --threads 2 --iters 2 --throughput-iters 1 --throughput-batch 2 --rounds 1 --test-limit 10"

values=(0 -1 99999999999999999999 1e300 abc nan)
runs=0
for prog in "${!base[@]}"; do
  exe="$build/$prog"
  [ -x "$exe" ] || fail "$exe not built"
  # "  --epochs INT:in [1, 100000]=20": the long flags whose type is a number.
  flags=$("$exe" --help | sed -n 's/^  \(--[a-z0-9-]*\) \(INT\|UINT\|FLOAT\).*/\1/p')
  [ -n "$flags" ] || fail "$prog: no numeric flags found in --help"
  read -r -a pairs <<< "${base[$prog]}"
  for flag in $flags; do
    args=()
    for ((i = 0; i < ${#pairs[@]}; i += 2)); do
      [ "${pairs[i]}" = "$flag" ] || args+=("${pairs[i]}" "${pairs[i + 1]}")
    done
    for v in "${values[@]}"; do
      out="$work/$prog$flag=$v"
      start=$(date +%s%N)
      timeout "${FLAGS_TEST_TIME_LIMIT:-600}" "$exe" "${args[@]}" "$flag" "$v" > "$out.stdout" 2> "$out.stderr" < /dev/null
      code=$?
      if [ "$code" = 124 ] && [ -n "${FLAGS_TEST_TIME_LIMIT:-}" ] && [ -s "$out.stdout" ]; then code=0; fi
      echo "$((($(date +%s%N) - start) / 1000000)) ms $prog $flag $v $code" >> "$work/times"
      runs=$((runs + 1))
      what="$prog $flag $v (exit $code)"
      [ "$code" -le 3 ] || { tail -5 "$out.stderr"; fail "$what: not a clean exit"; }
      if grep -q "Sanitizer\|runtime error:" "$out.stderr"; then head -20 "$out.stderr"; fail "$what: sanitizer report"; fi
      if [ "$code" = 2 ]; then grep -q -- "$flag" "$out.stderr" || { cat "$out.stderr"; fail "$what: the message does not name $flag"; }; fi
      if [ "$code" != 0 ]; then [ -s "$out.stderr" ] || fail "$what: no message"; fi
    done
  done
done
echo "flags: $runs runs, every one a clean exit; the slowest (ms, program, flag, value, exit code):"
sort -rn "$work/times" | sed -n 1,5p  # sed reads all its input: head would end sort with SIGPIPE, failing the pipeline
exit 0
