set terminal pngcairo size 900,560 font 'sans,11'
set output 'spread_var.png'
set datafile separator ','
set datafile missing 'nan'
set key outside bottom center horizontal
set grid
set title 'Spread of the batch variance per channel, var_B / sigma^2'
set xlabel 'batch size B'
set ylabel 'std over batches (mean over channels)'
set logscale y
set logscale x 2
plot 'spread_input.csv' using 1:12 skip 1 with linespoints lw 2 title 'input pixels, measured', \
     'spread_conv1.csv' using 1:12 skip 1 with linespoints lw 2 title 'conv1 (pre-BN), measured', \
     'spread_input.csv' using 1:15 skip 1 with lines dt 3 lw 2 title 'i.i.d. Gaussian: sqrt(2/(B*H*W))'
