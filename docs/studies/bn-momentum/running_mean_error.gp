set terminal pngcairo size 900,560 font 'sans,11'
set output 'running_mean_error.png'
set datafile separator ','
set datafile missing 'nan'
set key outside bottom center horizontal
set grid
set title 'Running mean error at the first BatchNorm (features.1)'
set xlabel 'epoch'
set ylabel 'mean over channels of |running mean - population mean| / population std'
set logscale y
set xtics 1
plot 'runs/momentum-0.1.csv' using 1:6 skip 1 with linespoints lw 2 title 'momentum 0.1', \
     'runs/momentum-0.01.csv' using 1:6 skip 1 with linespoints lw 2 title 'momentum 0.01', \
     'runs/momentum-0.5.csv' using 1:6 skip 1 with linespoints lw 2 title 'momentum 0.5'
