set terminal pngcairo size 900,560 font 'sans,11'
set output 'test_accuracy.png'
set datafile separator ','
set datafile missing 'nan'
set key outside bottom center horizontal
set grid
set title 'Test accuracy (eval mode: running statistics)'
set xlabel 'epoch'
set ylabel 'accuracy (%)'
set xtics 1
plot 'runs/momentum-0.1.csv' using 1:3 skip 1 with linespoints lw 2 title 'momentum 0.1', \
     'runs/momentum-0.01.csv' using 1:3 skip 1 with linespoints lw 2 title 'momentum 0.01', \
     'runs/momentum-0.5.csv' using 1:3 skip 1 with linespoints lw 2 title 'momentum 0.5'
