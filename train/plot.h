// minnow/train/plot.h: figures of CSV columns, drawn by gnuplot (Debian
// package gnuplot-nox), each PNG with the script that drew it beside it.
//
//     Figure f("Training loss", "epoch", "cross-entropy", /*log_y=*/true);
//     f.series.push_back({"run/metrics.csv", "epoch", "train_loss", "run"});
//     plot("run/train_loss.png", f);   // also writes run/train_loss.gp
#pragma once

#include <string>
#include <vector>

namespace minnow {

// One line of a figure: columns (by header name) of a CSV file.
struct Series {
    std::string csv, x, y, title;
    std::string style = "linespoints";  // gnuplot's "with ..." ("lines" for long series)
    std::string xtic = "";              // a column whose text labels the x axis at each point, or none
};

struct Figure {
    Figure(std::string title_, std::string xlabel_, std::string ylabel_, bool log_y_ = false)
        : title(std::move(title_)), xlabel(std::move(xlabel_)), ylabel(std::move(ylabel_)), log_y(log_y_) {}
    std::string title, xlabel, ylabel;
    bool log_y = false;
    std::vector<Series> series;
    std::string extra;  // more gnuplot commands before "plot" (e.g. "set yrange [0:100]")
};

// The 1-based index of column `name` in the CSV's header, or 0.
int csv_column(const std::string& csv, const std::string& name);

// Whether a gnuplot is on the PATH (looked for once).
bool gnuplot_found();

// Draws `fig` into png_path with gnuplot, and keeps the script next to it
// (same name, .gp). The script names its files relative to its own folder and
// runs there, so a results folder can be moved and re-plotted with
// `cd FOLDER && gnuplot NAME.gp`. Without gnuplot, or if gnuplot fails: a
// warning on stderr and false (the CSVs are still there). Throws minnow::Error
// if the script cannot be written or a column is missing. Titles and labels
// must not contain a single quote.
bool plot(const std::string& png_path, const Figure& fig);

}  // namespace minnow
