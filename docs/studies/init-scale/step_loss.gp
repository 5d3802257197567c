set terminal pngcairo size 900,560 font 'sans,11'
set output 'step_loss.png'
set datafile separator ','
set datafile missing 'nan'
set key outside bottom center horizontal
set grid
set title 'Training loss per step (running mean over 50 steps)'
set xlabel 'step'
set ylabel 'cross-entropy'
set logscale y
set yrange [1:10]
plot 'runs/batch-x0.1-steps.csv' using 1:3 skip 1 with lines lw 2 title 'batch x0.1', \
     'runs/batch-x1-steps.csv' using 1:3 skip 1 with lines lw 2 title 'batch x1', \
     'runs/batch-x10-steps.csv' using 1:3 skip 1 with lines lw 2 title 'batch x10', \
     'runs/none-x0.1-steps.csv' using 1:3 skip 1 with lines lw 2 title 'none x0.1', \
     'runs/none-x1-steps.csv' using 1:3 skip 1 with lines lw 2 title 'none x1', \
     'runs/none-x10-steps.csv' using 1:3 skip 1 with lines lw 2 title 'none x10'
