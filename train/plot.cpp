#include "train/plot.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/tensor.h"

namespace minnow {

namespace fs = std::filesystem;

int csv_column(const std::string& csv, const std::string& name) {
    std::ifstream in(csv);
    std::string header, field;
    std::getline(in, header);
    std::istringstream s(header);
    for (int i = 1; std::getline(s, field, ','); ++i)
        if (field == name) return i;
    return 0;
}

bool gnuplot_found() {
    static const bool found = std::system("command -v gnuplot >/dev/null 2>&1") == 0;
    return found;
}

bool plot(const std::string& png_path, const Figure& fig) {
    const fs::path png(png_path), dir = png.parent_path().empty() ? fs::path(".") : png.parent_path();
    const fs::path gp_path = dir / (png.stem().string() + ".gp");
    {
        std::ofstream gp(gp_path);
        if (!gp) throw Error(gp_path.string() + ": cannot write");
        gp << "set terminal pngcairo size 900,560 font 'sans,11'\n"
           << "set output '" << png.filename().string() << "'\n"
           << "set datafile separator ','\n"
           << "set datafile missing 'nan'\n"
           << "set key outside bottom center horizontal\n"
           << "set grid\n"
           << "set title '" << fig.title << "'\n"
           << "set xlabel '" << fig.xlabel << "'\n"
           << "set ylabel '" << fig.ylabel << "'\n";
        if (fig.log_y) gp << "set logscale y\n";
        if (!fig.extra.empty()) gp << fig.extra << "\n";
        gp << "plot ";
        for (size_t i = 0; i < fig.series.size(); ++i) {
            const Series& s = fig.series[i];
            const int xc = csv_column(s.csv, s.x), yc = csv_column(s.csv, s.y);
            if (xc == 0 || yc == 0) throw Error(s.csv + ": no column '" + (xc ? s.y : s.x) + "' for " + png_path);
            const int tc = s.xtic.empty() ? 0 : csv_column(s.csv, s.xtic);
            if (!s.xtic.empty() && tc == 0) throw Error(s.csv + ": no column '" + s.xtic + "' for " + png_path);
            gp << (i ? ", \\\n     " : "") << "'" << fs::relative(s.csv, dir).string() << "' using " << xc << ":"
               << yc << (tc ? ":xtic(" + std::to_string(tc) + ")" : "") << " skip 1 with " << s.style
               << " lw 2 title '" << s.title << "'";
        }
        gp << "\n";
        if (!gp.flush()) throw Error(gp_path.string() + ": cannot write");
    }
    if (!gnuplot_found()) {
        std::fprintf(stderr, "warning: gnuplot not found (apt-get install gnuplot-nox): %s not drawn\n",
                     png_path.c_str());
        return false;
    }
    // gnuplot's own messages go to NAME.gp.err, shown only if it fails (a
    // one-point figure draws fine, but with warnings about its empty range).
    const std::string err = gp_path.filename().string() + ".err";
    const std::string cmd =
        "cd '" + dir.string() + "' && gnuplot '" + gp_path.filename().string() + "' 2> '" + err + "'";
    const bool ok = std::system(cmd.c_str()) == 0;
    std::string messages;
    {
        std::ifstream in(dir / err);
        std::getline(in, messages, '\0');
    }
    std::error_code ec;
    fs::remove(dir / err, ec);
    if (!ok) {
        std::fprintf(stderr, "warning: gnuplot failed on %s%s%s", gp_path.c_str(), messages.empty() ? "" : ":\n",
                     messages.empty() ? "\n" : messages.c_str());
        return false;
    }
    return true;
}

}  // namespace minnow
