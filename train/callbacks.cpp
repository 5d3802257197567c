#include "train/callbacks.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <fstream>
#include <sstream>

#include "data/io.h"
#include "optim/grad_utils.h"
#include "train/plot.h"

namespace minnow {

using Clock = std::chrono::steady_clock;

bool stdout_is_terminal() { return isatty(fileno(stdout)) != 0; }

std::string format_duration(double seconds) {
    const long s = std::lround(std::max(0.0, seconds));
    char buf[32];
    if (s >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
    else std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
    return buf;
}

// ---------------------------------------------------------------- ProgressBar
ProgressBar::ProgressBar(bool enabled) : tty_(stdout_is_terminal()), enabled_(enabled) {}

void ProgressBar::on_epoch_begin(const EpochBegin& b) {
    epoch_ = b;
    start_ = Clock::now();
    last_ = -1;
}

void ProgressBar::on_step(const StepInfo& s) {
    if (!enabled_) return;
    const int64_t total = epoch_.batches, done = s.batch;
    const double t = std::chrono::duration<double>(Clock::now() - start_).count();
    const double ips = t > 0 ? s.seen / t : 0;
    const double eta = done > 0 ? t / done * (total - done) : 0;
    const int epoch = static_cast<int>(epoch_.epoch), epochs = static_cast<int>(epoch_.epochs);
    if (!tty_) {  // a log file: a plain line at every tenth of the epoch
        const int64_t tenth = std::max<int64_t>(total / 10, 1);
        if (done % tenth == 0 && done < total) {
            std::printf("  epoch %d/%d: %lld/%lld batches, loss %.4f, %.0f img/s, ETA %s\n", epoch, epochs,
                        static_cast<long long>(done), static_cast<long long>(total), s.running_loss, ips,
                        format_duration(eta).c_str());
            std::fflush(stdout);
        }
        return;
    }
    if (t - last_ < 0.25 && done != total) return;
    last_ = t;
    const int width = 24, filled = static_cast<int>(width * done / std::max<int64_t>(total, 1));
    std::printf("\repoch %d/%d [%s%s] %lld/%lld loss %.4f  %.0f img/s  ETA %s   ", epoch, epochs,
                std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                static_cast<long long>(done), static_cast<long long>(total), s.running_loss, ips,
                format_duration(eta).c_str());
    std::fflush(stdout);
}

void ProgressBar::on_epoch_trained(const EpochBegin&) {
    if (tty_ && enabled_) std::printf("\r%*s\r", 100, "");
}

// ---------------------------------------------------------------- EpochTable
void EpochTable::on_train_begin(const TrainState&) {
    std::printf("%5s %9s %10s %9s %9s %8s %9s %9s %7s %7s\n", "epoch", "lr", "train_loss", "train_acc",
                "test_loss", "test_acc", "|g| mean", "|g| max", "img/s", "time");
}

void EpochTable::on_epoch_end(const EpochStats& e) {
    std::printf("%5lld %9.4g %10.4f %8.2f%% %9.4f %7.2f%% %9.4f %9.4f %7.0f %7s%s\n",
                static_cast<long long>(e.epoch), e.lr, e.train_loss, e.train_acc, e.test_loss, e.test_acc,
                e.grad_norm_mean, e.grad_norm_max, e.img_per_s, format_duration(e.epoch_time_s).c_str(),
                e.partial ? partial_note_.c_str() : "");
    std::fflush(stdout);
}

// ---------------------------------------------------------------- LayerGradNorms
void LayerGradNorms::on_epoch_begin(const EpochBegin&) {
    sum_.clear();
    steps_ = 0;
}

void LayerGradNorms::after_backward() {
    step_sq_.clear();
    for (const auto& [name, n] : per_parameter_grad_norms(params_)) step_sq_[name.substr(0, name.rfind('.'))] += n * n;
}

void LayerGradNorms::on_step(const StepInfo&) {
    for (const auto& [layer, sq] : step_sq_) sum_[layer] += std::sqrt(sq);
    ++steps_;
}

std::map<std::string, double> LayerGradNorms::epoch_means() const {
    std::map<std::string, double> m;
    for (const auto& [layer, s] : sum_) m[layer] = s / std::max<int64_t>(steps_, 1);
    return m;
}

// ---------------------------------------------------------------- MetricsLog
std::string MetricsLog::csv_header() {
    return "epoch,lr,train_loss,train_acc,test_loss,test_acc,grad_norm_mean,grad_norm_max,img_per_s,epoch_time_s,steps";
}

namespace {
// A JSON number as metrics.csv writes it (as a stream prints a double; a
// NaN, stored as null in JSON, as "nan").
std::string csv_field(const nlohmann::json& v) {
    if (v.is_null()) return "nan";
    if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
    if (v.is_number()) {
        std::ostringstream s;
        s << v.get<double>();
        return s.str();
    }
    return v.dump();
}
}  // namespace

void MetricsLog::restore(const std::string& history) {
    lines_.clear();
    std::istringstream in(history);
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) lines_.push_back(line);
    restored_ = true;
}

std::string MetricsLog::history() const {
    std::string s;
    for (const auto& l : lines_) s += l + "\n";
    return s;
}

void MetricsLog::write() const {
    std::string csv = csv_header() + "\n";
    std::vector<std::string> columns;
    {
        std::istringstream h(csv_header());
        for (std::string c; std::getline(h, c, ',');) columns.push_back(c);
    }
    for (const auto& line : lines_) {
        const nlohmann::json j = nlohmann::json::parse(line);
        if (j.contains("diverged_at_step")) continue;  // in the JSON lines only
        for (size_t i = 0; i < columns.size(); ++i) csv += (i ? "," : "") + csv_field(j.value(columns[i], nlohmann::json()));
        csv += "\n";
    }
    write_text_atomically(csv_, csv);
    write_text_atomically(jsonl_, history());
}

void MetricsLog::on_train_begin(const TrainState& s) {
    if (s.epochs_done == 0) {
        lines_.clear();
    } else if (!restored_) {  // no history from the checkpoint: what the old log holds, as far as it parses
        lines_.clear();
        std::ifstream in(jsonl_);
        int64_t number = 0;
        for (std::string line; std::getline(in, line);) {
            ++number;
            if (line.empty()) continue;
            const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
            if (j.is_discarded() || !j.is_object() || !j.contains("epoch") || !j["epoch"].is_number_integer()) {
                std::fprintf(stderr, "warning: %s line %lld is not a metrics object: dropped\n", jsonl_.c_str(),
                             static_cast<long long>(number));
                continue;
            }
            const int64_t epoch = j["epoch"].get<int64_t>();
            if (epoch >= 1 && epoch <= s.epochs_done && !j.contains("diverged_at_step")) lines_.push_back(j.dump());
        }
    }
    write();
}

void MetricsLog::on_epoch_end(const EpochStats& e) {
    nlohmann::json j{{"epoch", e.epoch},
                     {"lr", e.lr},
                     {"train_loss", e.train_loss},
                     {"train_acc", e.train_acc},
                     {"test_loss", e.test_loss},
                     {"test_acc", e.test_acc},
                     {"grad_norm_mean", e.grad_norm_mean},
                     {"grad_norm_max", e.grad_norm_max},
                     {"img_per_s", e.img_per_s},
                     {"epoch_time_s", e.epoch_time_s},
                     {"steps", e.steps},
                     {"partial_epoch", e.partial}};
    if (layers_) {
        nlohmann::json layers;
        for (const auto& [layer, n] : layers_->epoch_means()) layers[layer] = n;
        j["layer_grad_norm"] = layers;
    }
    lines_.push_back(j.dump());
    write();
}

void MetricsLog::on_diverged(const Divergence& d) {
    lines_.push_back(nlohmann::json{{"epoch", d.epoch}, {"diverged_at_step", d.step}, {"reason", d.reason}}.dump());
    write();
}

// ---------------------------------------------------------------- SaveCheckpoint
void SaveCheckpoint::on_epoch_end(const EpochStats& e) {
    if (e.partial) return;  // a checkpoint marks whole epochs
    TrainingCheckpoint c = TrainingCheckpoint::capture(model_, opt_, sched_, {e.epoch, e.steps}, run_);
    if (log_) c.history = log_->history();
    c.save(path_);
    saved_epoch_ = e.epoch;
}

// ---------------------------------------------------------------- Figures
int Figures::draw() {
    if (!gnuplot_found()) {
        if (!warned_)
            std::fprintf(stderr, "warning: gnuplot not found (apt-get install gnuplot-nox): no figures in %s\n",
                         dir_.c_str());
        warned_ = true;
        return 0;
    }
    struct One {
        const char *png, *title, *ylabel, *column;
        bool log_y;
    };
    const One figures[] = {
        {"train_loss.png", "Training loss", "cross-entropy (mean over the epoch)", "train_loss", true},
        {"test_accuracy.png", "Test accuracy", "accuracy (%)", "test_acc", false},
        {"grad_norm.png", "Global gradient norm", "L2 norm (mean over the steps of an epoch)", "grad_norm_mean", true},
    };
    int written = 0;
    for (const One& f : figures) {
        Figure fig(f.title, "epoch", f.ylabel, f.log_y);
        fig.extra = "set xtics 1";
        fig.series.push_back({csv_, "epoch", f.column, label_});
        written += plot(dir_ + "/" + f.png, fig);
    }
    return written;
}

}  // namespace minnow
