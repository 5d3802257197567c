set terminal pngcairo size 900,560 font 'sans,11'
set output 'spread_mean.png'
set datafile separator ','
set datafile missing 'nan'
set key outside bottom center horizontal
set grid
set title 'Spread of the batch mean per channel, (mu_B - mu)/sigma (2000 batches per size)'
set xlabel 'batch size B'
set ylabel 'std over batches (mean over channels)'
set logscale y
set logscale x 2
plot 'spread_input.csv' using 1:4 skip 1 with linespoints lw 2 title 'input pixels, measured', \
     'spread_conv1.csv' using 1:4 skip 1 with linespoints lw 2 title 'conv1 (pre-BN), measured', \
     'spread_input.csv' using 1:8 skip 1 with lines dt 2 lw 2 title 'input, from image means', \
     'spread_conv1.csv' using 1:8 skip 1 with lines dt 2 lw 2 title 'conv1, from image means', \
     'spread_input.csv' using 1:7 skip 1 with lines dt 3 lw 2 title 'i.i.d. values: 1/sqrt(B*H*W)'
