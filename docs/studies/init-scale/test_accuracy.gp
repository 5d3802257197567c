set terminal pngcairo size 900,560 font 'sans,11'
set output 'test_accuracy.png'
set datafile separator ','
set datafile missing 'nan'
set key outside bottom center horizontal
set grid
set title 'Test accuracy by initial weight scale'
set xlabel 'epoch'
set ylabel 'accuracy (%)'
set xtics 1
plot 'runs/batch-x0.1.csv' using 1:6 skip 1 with linespoints lw 2 title 'batch x0.1', \
     'runs/batch-x1.csv' using 1:6 skip 1 with linespoints lw 2 title 'batch x1', \
     'runs/batch-x10.csv' using 1:6 skip 1 with linespoints lw 2 title 'batch x10', \
     'runs/none-x0.1.csv' using 1:6 skip 1 with linespoints lw 2 title 'none x0.1', \
     'runs/none-x1.csv' using 1:6 skip 1 with linespoints lw 2 title 'none x1'
