#!/usr/bin/env bash
# Plots training runs side by side from their metrics.csv logs (written by
# train_cifar), with gnuplot (Debian package gnuplot-nox):
#
#   apps/plot_runs.sh OUT_DIR RUN_DIR[=LABEL] [RUN_DIR[=LABEL] ...]
#
# writes OUT_DIR/{train_loss,test_accuracy,grad_norm}.png, one line per run.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 OUT_DIR RUN_DIR[=LABEL] [RUN_DIR[=LABEL] ...]" >&2
  exit 2
fi
command -v gnuplot >/dev/null || { echo "$0: gnuplot not found: apt-get install gnuplot-nox" >&2; exit 1; }
out=$1; shift
mkdir -p "$out"

files=(); labels=()
for arg in "$@"; do
  dir=${arg%%=*}; label=${arg#*=}; [ "$label" = "$arg" ] && label=$(basename "$dir")
  csv="$dir/metrics.csv"
  [ -s "$csv" ] || { echo "$0: $csv is missing or empty" >&2; exit 1; }
  files+=("$csv"); labels+=("$label")
done

# Columns of metrics.csv, by name, so the plots survive new columns.
col() { head -1 "${files[0]}" | tr ',' '\n' | grep -nx "$1" | cut -d: -f1; }

plot() {  # plot FILE TITLE YLABEL COLUMN [logscale]
  local png=$1 title=$2 ylabel=$3 c; c=$(col "$4")
  [ -n "$c" ] || { echo "$0: no column $4 in ${files[0]}" >&2; exit 1; }
  {
    echo "set terminal pngcairo size 900,560 font 'sans,11'"
    echo "set output '$out/$png'"
    echo "set datafile separator ','"
    echo "set key outside bottom center horizontal"
    echo "set grid"
    echo "set xtics 1"
    echo "set title '$title'"
    echo "set xlabel 'epoch'"
    echo "set ylabel '$ylabel'"
    [ "${5:-}" = log ] && echo "set logscale y"
    printf "plot "
    for i in "${!files[@]}"; do
      [ "$i" -gt 0 ] && printf ", "
      printf "'%s' using 1:%s skip 1 with linespoints lw 2 title '%s'" "${files[$i]}" "$c" "${labels[$i]}"
    done
    echo
  } | gnuplot
  echo "wrote $out/$png"
}

plot train_loss.png "Training loss" "cross-entropy (mean over the epoch)" train_loss log
plot test_accuracy.png "Test accuracy" "accuracy (%)" test_acc
plot grad_norm.png "Global gradient norm" "L2 norm (mean over the steps of an epoch)" grad_norm_mean log
