set terminal pngcairo size 900,560 font 'sans,11'
set output 'latency.png'
set datafile separator ','
set datafile missing 'nan'
set key outside bottom center horizontal
set grid
set title 'Batch-1 latency by version (p50, 2 threads)'
set xlabel ''
set ylabel 'ms'
set logscale y
set xtics rotate by -35 left
set bmargin 9
set xrange [0.5:9.5]
plot 'latency_figure.csv' using 1:3:xtic(2) skip 1 with points pt 7 ps 1.5 lw 2 title '32x32', \
     'latency_figure.csv' using 1:4:xtic(2) skip 1 with points pt 5 ps 1.5 lw 2 title '128x128'
