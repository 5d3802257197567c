set terminal pngcairo size 900,560 font 'sans,11'
set output 'test_accuracy.png'
set datafile separator ','
set datafile missing 'nan'
set key outside bottom center horizontal
set grid
set title 'Test accuracy at batch 128 and at batch 1'
set xlabel 'epoch'
set ylabel 'accuracy (%)'
set xtics 1
plot 'runs/batch-b128.csv' using 1:6 skip 1 with linespoints lw 2 title 'batch b128', \
     'runs/batch-b1.csv' using 1:6 skip 1 with linespoints lw 2 title 'batch b1', \
     'runs/gated-b128.csv' using 1:6 skip 1 with linespoints lw 2 title 'gated b128', \
     'runs/gated-b1.csv' using 1:6 skip 1 with linespoints lw 2 title 'gated b1', \
     'runs/renorm-b128.csv' using 1:6 skip 1 with linespoints lw 2 title 'renorm b128', \
     'runs/renorm-b1.csv' using 1:6 skip 1 with linespoints lw 2 title 'renorm b1', \
     'runs/group-b128.csv' using 1:6 skip 1 with linespoints lw 2 title 'group b128', \
     'runs/group-b1.csv' using 1:6 skip 1 with linespoints lw 2 title 'group b1', \
     'runs/layer-b128.csv' using 1:6 skip 1 with linespoints lw 2 title 'layer b128', \
     'runs/layer-b1.csv' using 1:6 skip 1 with linespoints lw 2 title 'layer b1'
