set terminal pngcairo size 900,560 font 'sans,11'
set output 'train_loss.png'
set datafile separator ','
set datafile missing 'nan'
set key outside bottom center horizontal
set grid
set title 'Training loss (mean over each epoch)'
set xlabel 'epoch'
set ylabel 'cross-entropy'
set logscale y
set xtics 1
plot 'runs/batch-lr0.01.csv' using 1:3 skip 1 with linespoints lw 2 title 'batch lr=0.01', \
     'runs/batch-lr0.05.csv' using 1:3 skip 1 with linespoints lw 2 title 'batch lr=0.05', \
     'runs/batch-lr0.1.csv' using 1:3 skip 1 with linespoints lw 2 title 'batch lr=0.1', \
     'runs/none-lr0.01.csv' using 1:3 skip 1 with linespoints lw 2 title 'none lr=0.01', \
     'runs/none-lr0.05.csv' using 1:3 skip 1 with linespoints lw 2 title 'none lr=0.05', \
     'runs/none-lr0.1.csv' using 1:3 skip 1 with linespoints lw 2 title 'none lr=0.1'
