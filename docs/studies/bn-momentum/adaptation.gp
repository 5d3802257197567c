set terminal pngcairo size 900,560 font 'sans,11'
set output 'adaptation.png'
set datafile separator ','
set datafile missing 'nan'
set key outside bottom center horizontal
set grid
set title 'Re-estimating the statistics on shifted images'
set xlabel 'batches of 128 shifted training images'
set ylabel 'accuracy on the shifted test set (%)'
set logscale x 2
set xrange [0.7:*]
plot 'runs/momentum-0.1-adaptation.csv' using 1:2 skip 1 with linespoints lw 2 title 'momentum 0.1', \
     'runs/momentum-0.01-adaptation.csv' using 1:2 skip 1 with linespoints lw 2 title 'momentum 0.01', \
     'runs/momentum-0.5-adaptation.csv' using 1:2 skip 1 with linespoints lw 2 title 'momentum 0.5'
