set terminal pngcairo size 900,560 font 'sans,11'
set output 'probe_noise.png'
set datafile separator ','
set datafile missing 'nan'
set key outside bottom center horizontal
set grid
set title 'The normalised activations of one image across 200 batches of random companions'
set xlabel 'batch size B'
set ylabel 'std over batches (rms over the elements of the image)'
set logscale x 2
set yrange [0:*]
plot 'probe_input.csv' using 1:3 skip 1 with linespoints lw 2 title 'BatchNorm, input', \
     'probe_conv1.csv' using 1:3 skip 1 with linespoints lw 2 title 'BatchNorm, conv1', \
     'probe_input.csv' using 1:5 skip 1 with lines dt 2 lw 2 title 'first-order prediction, input', \
     'probe_conv1.csv' using 1:5 skip 1 with lines dt 2 lw 2 title 'first-order prediction, conv1', \
     'probe_input.csv' using 1:6 skip 1 with linespoints lw 2 title 'LayerNorm (max), input', \
     'probe_conv1.csv' using 1:6 skip 1 with linespoints lw 2 title 'LayerNorm (max), conv1', \
     'probe_conv1.csv' using 1:7 skip 1 with linespoints lw 2 title 'GroupNorm(1,C) (max), conv1'
