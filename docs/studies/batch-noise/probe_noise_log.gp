set terminal pngcairo size 900,560 font 'sans,11'
set output 'probe_noise_log.png'
set datafile separator ','
set datafile missing 'nan'
set key outside bottom center horizontal
set grid
set title 'BatchNorm only, log-log: the normalised activations of one image across batches'
set xlabel 'batch size B'
set ylabel 'std over batches (rms over the elements of the image)'
set logscale y
set logscale x 2
plot 'probe_input.csv' using 1:3 skip 1 with linespoints lw 2 title 'BatchNorm, input', \
     'probe_conv1.csv' using 1:3 skip 1 with linespoints lw 2 title 'BatchNorm, conv1', \
     'probe_input.csv' using 1:5 skip 1 with lines dt 2 lw 2 title 'first-order prediction, input', \
     'probe_conv1.csv' using 1:5 skip 1 with lines dt 2 lw 2 title 'first-order prediction, conv1'
