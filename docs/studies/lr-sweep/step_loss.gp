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
plot 'runs/batch-lr0.01-steps.csv' using 1:3 skip 1 with lines lw 2 title 'batch lr=0.01', \
     'runs/batch-lr0.05-steps.csv' using 1:3 skip 1 with lines lw 2 title 'batch lr=0.05', \
     'runs/batch-lr0.1-steps.csv' using 1:3 skip 1 with lines lw 2 title 'batch lr=0.1', \
     'runs/none-lr0.01-steps.csv' using 1:3 skip 1 with lines lw 2 title 'none lr=0.01', \
     'runs/none-lr0.05-steps.csv' using 1:3 skip 1 with lines lw 2 title 'none lr=0.05', \
     'runs/none-lr0.1-steps.csv' using 1:3 skip 1 with lines lw 2 title 'none lr=0.1'
