// study_inference: the inference study (BatchNorm studies, study 6).
//
//     study_inference --checkpoint results/cnn-batch/checkpoint.safetensors
//     study_inference --checkpoint ckpt.safetensors --only latency --iters 200
//     study_inference --checkpoint ckpt.safetensors --only accuracy --test-limit 2000
//
// Versions of one trained model, in eval mode:
//   fp32          the model as trained (Conv2d, then BatchNorm2d with running statistics)
//   fp32-folded   BatchNorm folded into the conv before it (layers/fold_batchnorm.h)
//   bf16-folded   the folded model with every conv in bfloat16 (layers/conv2d_bf16.h)
//   int8          the folded model in int8 (layers/int8_model.h), activation
//                 scales calibrated (mse) on --calibration training images;
//                 int8-minmax and int8-percentile calibrate the other ways
//                 (accuracy only: they run the same kernels as int8)
// and for each:
//   latency      the time of one forward pass of a batch of 1, at 32x32 and
//                128x128 (random images; the cnn pools globally before its
//                classifier, so it takes any size): p50 and p90 over --iters passes
//   throughput   images/second of a batch of 256 at 32x32 (from the median pass)
//   accuracy     on the CIFAR-10 test set, and how far its logits are from fp32's
// PyTorch's side (fp32, folded, bf16, its dynamic and static int8) is
// bench/pytorch_inference.py, on the same checkpoint and images; summary.md
// puts its results beside minnow's and draws latency.png.
// The timed passes are done in rounds, each version in turn, so that a change
// of the machine's speed during the run falls on all of them alike.
//
// Writes into --out: latency.csv, accuracy.csv, run_info.json (how each part
// was run) and summary.md, built from whichever of those exist (and from
// pytorch_latency.csv if bench/pytorch_inference.py wrote one), so the two
// parts can be run separately: the timings on a quiet machine, the accuracy
// whenever.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <iterator>
#include <sstream>

#include "apps/common.h"
#include "data/io.h"
#include "kernels/cpu.h"
#include "kernels/gemm_bf16.h"
#include "studies/summary.h"
#include "core/random.h"
#include "layers/conv2d_bf16.h"
#include "layers/fold_batchnorm.h"
#include "layers/int8_model.h"
#include "train/plot.h"

using namespace minnow;
using namespace minnow::app;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
    std::string checkpoint, out = "results/studies/inference", data, only = "all", cache_dir = default_cache_dir();
    int threads = 0, iters = 200, throughput_iters = 10, rounds = 5;
    int64_t test_limit = 0, batch_size = 256, throughput_batch = 256, calibration = 512;
    std::string command;  // as typed, for the record
};

struct Variant {
    std::string name, description;
    std::shared_ptr<Module> model;
    bool timed = true;  // in the latency part (the other int8 calibrations run the same kernels as int8)
};

// The versions (see the top), each its own model loaded from the file.
std::vector<Variant> make_variants(const Options& o) {
    const std::string& checkpoint = o.checkpoint;
    SafetensorsFile f = load_safetensors(checkpoint);
    auto meta = [&](const std::string& key) {
        auto it = f.metadata.find(key);
        if (it == f.metadata.end()) throw Error(checkpoint + ": its metadata does not say the " + key);
        return it->second;
    };
    auto load = [&] {
        auto m = make_model(meta("model"), meta("norm"));
        m->load_state_dict(model_entries(f), true, checkpoint);
        m->eval();
        return m;
    };
    std::vector<Variant> v;
    v.push_back({"fp32", "as trained: Conv2d + BatchNorm2d (running statistics), float32", load()});
    auto folded = load();
    const int pairs = fold_batchnorm(*folded);
    v.push_back({"fp32-folded", std::to_string(pairs) + " BatchNorm2d folded into their convs, float32", folded});
    auto bf16 = load();
    fold_batchnorm(*bf16);
    const int convs = to_bf16_inference(*bf16);
    v.push_back({"bf16-folded",
                 "folded, then " + std::to_string(convs) + " convs in bfloat16 (" +
                     bf16::kernel_name(bf16::best_kernel()) + " kernel, float32 accumulation" +
                     (bf16::kernel_has_bf16_arithmetic(bf16::best_kernel())
                          ? ""
                          : "; this CPU has no bfloat16 arithmetic: the kernel widens to float32, so bf16 is no "
                            "faster than fp32 here") +
                     ") with the ReLU after each done by the conv, and max pooling "
                     "without the indices a backward would need; the classifier and pooling in float32",
                 bf16});
    // int8: calibrated on training images, normalised as the checkpoint was trained.
    const std::string root = find_cifar10(o.data);
    const Tensor calibration =
        calibration_images(root, o.calibration, o.cache_dir, normalisation_in(f, "mean", checkpoint, kCifarMean),
                           normalisation_in(f, "std", checkpoint, kCifarStd));
    for (Calibration c : {Calibration::Mse, Calibration::MinMax, Calibration::Percentile}) {
        Int8Options opt;
        opt.calibration = c;
        auto m = load();
        auto q = int8_version(meta("model"), meta("norm"), *m, calibration, opt);
        const std::string how = c == Calibration::Percentile ? "the 99.99th percentile" : calibration_name(c);
        v.push_back({c == Calibration::Mse ? "int8" : std::string("int8-") + calibration_name(c),
                     "folded, then " + std::to_string(q->convs().size()) +
                         " convs in int8 (per-output-channel weights; 7-bit activations with scales calibrated by " +
                         how + " on " + std::to_string(calibration.size(0)) +
                         " training images; int32 sums; requantization fused with the ReLU and the max-pool; " +
                         int8::kernel_name(q->kernel()) +
                         " kernel), the classifier quantized dynamically; global pooling in float32",
                     q, c == Calibration::Mse});
    }
    return v;
}

// The nearest-rank percentile: the smallest value with at least q of them at or below it.
double percentile(std::vector<double> v, double q) {
    std::sort(v.begin(), v.end());
    const double rank = std::ceil(q * static_cast<double>(v.size()));
    return v[static_cast<size_t>(std::clamp(rank, 1.0, static_cast<double>(v.size()))) - 1];
}

// ---------------------------------------------------------------- latency
struct Timing {
    std::string variant, input;
    int64_t batch = 0;
    std::vector<double> seconds, cpu_seconds;  // wall-clock, and CPU time of the process (all threads)
};

double process_cpu_seconds() {
    timespec t{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

void run_latency(const Options& o, std::vector<Variant>& variants) {
    struct Shape2 {
        std::string input;
        int64_t batch, size;
        int iters;
    };
    const std::vector<Shape2> shapes{{"32x32", 1, 32, o.iters}, {"128x128", 1, 128, o.iters},
                                     {"32x32", o.throughput_batch, 32, o.throughput_iters}};
    std::vector<Timing> timings;
    NoGradGuard no_grad;
    for (const Shape2& s : shapes) {
        manual_seed(0);
        Tensor x = Tensor::normal({s.batch, 3, s.size, s.size}, 0.f, 1.f);
        std::vector<Timing> rows;
        std::vector<Variant*> timed;
        for (auto& v : variants)
            if (v.timed) rows.push_back({v.name, s.input, s.batch, {}, {}}), timed.push_back(&v);
        const int rounds = std::max(1, std::min(o.rounds, s.iters));
        for (int r = 0; r < rounds; ++r)
            for (size_t i = 0; i < timed.size(); ++i) {
                Module& m = *timed[i]->model;
                for (int w = 0; w < 2; ++w) m(x);  // warm the caches and the scratch buffers
                const int n = s.iters / rounds + (r < s.iters % rounds ? 1 : 0);
                for (int k = 0; k < n; ++k) {
                    const double c0 = process_cpu_seconds();
                    const auto t0 = Clock::now();
                    m(x);
                    rows[i].seconds.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
                    rows[i].cpu_seconds.push_back(process_cpu_seconds() - c0);
                }
            }
        for (auto& row : rows) {
            std::printf("  %-12s batch %3lld %-8s p50 %8.3f ms  p90 %8.3f ms\n", row.variant.c_str(),
                        static_cast<long long>(row.batch), row.input.c_str(), percentile(row.seconds, 0.5) * 1e3,
                        percentile(row.seconds, 0.9) * 1e3);
            std::fflush(stdout);
            timings.push_back(std::move(row));
        }
    }
    // latency.csv keeps the rows of other thread counts (one run per count),
    // and this run's replace any of its own count.
    const fs::path path = fs::path(o.out) / "latency.csv";
    std::vector<std::string> kept;
    {
        std::ifstream in(path);
        std::string line;
        const std::string mine = "," + std::to_string(get_num_threads()) + ",";
        for (bool header = true; std::getline(in, line); header = false)
            if (!header && !line.empty()) {
                // threads is the 4th column: variant,input,batch,threads,...
                size_t at = 0;
                for (int comma = 0; comma < 3 && at != std::string::npos; ++comma) at = line.find(',', at + 1);
                if (at == std::string::npos || line.compare(at, mine.size(), mine) != 0) kept.push_back(line);
            }
    }
    std::ostringstream csv;
    csv << "variant,input,batch,threads,passes,p50_ms,p90_ms,mean_ms,img_per_s,cpu_p50_ms\n";
    for (const auto& line : kept) csv << line << "\n";
    for (const auto& t : timings) {
        double mean = 0;
        for (double s : t.seconds) mean += s / t.seconds.size();
        const double p50 = percentile(t.seconds, 0.5);
        char line[256];
        std::snprintf(line, sizeof line, "%s,%s,%lld,%d,%zu,%.4f,%.4f,%.4f,%.1f,%.4f\n", t.variant.c_str(),
                      t.input.c_str(), static_cast<long long>(t.batch), get_num_threads(), t.seconds.size(), p50 * 1e3,
                      percentile(t.seconds, 0.9) * 1e3, mean * 1e3, t.batch / p50, percentile(t.cpu_seconds, 0.5) * 1e3);
        csv << line;
    }
    write_text_atomically(path, csv.str());
}

// ---------------------------------------------------------------- accuracy
void run_accuracy(const Options& o, std::vector<Variant>& variants) {
    const std::string root = find_cifar10(o.data);
    auto test_set = load_split(root, false, o.test_limit, o.cache_dir);
    const SafetensorsFile f = load_safetensors(o.checkpoint);  // normalised as it was trained
    const std::vector<float> mean = normalisation_in(f, "mean", o.checkpoint, kCifarMean),
                             std = normalisation_in(f, "std", o.checkpoint, kCifarStd);
    std::ostringstream csv;
    csv << "variant,images,accuracy_pct,mean_loss,max_abs_logit_diff_vs_fp32,mean_abs_logit_diff_vs_fp32,"
           "max_abs_logit_fp32,predictions_changed_vs_fp32\n";
    Tensor fp32_logits;
    for (auto& v : variants) {
        const auto t0 = Clock::now();
        EvalResult r = evaluate(*v.model, test_set, o.batch_size, true, mean, std);
        const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        if (!fp32_logits.defined()) fp32_logits = r.logits;
        double max_diff = 0, mean_diff = 0, scale = 0;
        int64_t changed = 0;
        const int64_t k = r.logits.size(1);
        for (int64_t i = 0; i < r.n; ++i) {
            const float* a = r.logits.data() + i * k;
            const float* b = fp32_logits.data() + i * k;
            for (int64_t j = 0; j < k; ++j) {
                const double d = std::fabs(static_cast<double>(a[j]) - b[j]);
                max_diff = std::max(max_diff, d);
                mean_diff += d / (r.n * k);
                scale = std::max(scale, std::fabs(static_cast<double>(b[j])));
            }
            changed += std::max_element(a, a + k) - a != std::max_element(b, b + k) - b;
        }
        std::printf("  %-12s %lld images: accuracy %.2f%%, max |logit - fp32| %.3g (logit scale %.3g), "
                    "%lld predictions changed (%.0f s)\n",
                    v.name.c_str(), static_cast<long long>(r.n), r.accuracy, max_diff, scale,
                    static_cast<long long>(changed), secs);
        std::fflush(stdout);
        char line[256];
        std::snprintf(line, sizeof line, "%s,%lld,%.2f,%.5f,%.6g,%.6g,%.6g,%lld\n", v.name.c_str(),
                      static_cast<long long>(r.n), r.accuracy, r.loss, max_diff, mean_diff, scale,
                      static_cast<long long>(changed));
        csv << line;
    }
    write_text_atomically((fs::path(o.out) / "accuracy.csv").string(), csv.str());
}

// ---------------------------------------------------------------- summary
using Table = std::vector<std::map<std::string, std::string>>;

Table read_csv(const fs::path& path) {
    Table rows;
    std::ifstream in(path);
    std::string line;
    std::vector<std::string> header;
    auto split = [](const std::string& s) {
        std::vector<std::string> out;
        std::stringstream ss(s);
        std::string cell;
        while (std::getline(ss, cell, ',')) out.push_back(cell);
        return out;
    };
    if (!std::getline(in, line)) return rows;
    header = split(line);
    while (std::getline(in, line)) {
        auto cells = split(line);
        std::map<std::string, std::string> row;
        for (size_t i = 0; i < header.size() && i < cells.size(); ++i) row[header[i]] = cells[i];
        rows.push_back(row);
    }
    return rows;
}

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown CPU";
}

// The instruction sets that decide which kernels can run (from /proc/cpuinfo's flags).
std::string cpu_instruction_sets() {
    std::ifstream in("/proc/cpuinfo");
    std::string line, out;
    while (std::getline(in, line))
        if (line.rfind("flags", 0) == 0) {
            std::istringstream words(line.substr(line.find(':') + 1));
            std::vector<std::string> have{std::istream_iterator<std::string>(words), {}};
            for (const char* f : {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                                  "amx_tile", "amx_int8", "amx_bf16"})
                if (std::find(have.begin(), have.end(), f) != have.end()) out += std::string(out.empty() ? "" : " ") + f;
            break;
        }
    return out.empty() ? "none of AVX2, AVX-512, VNNI, AMX" : out;
}

std::string now_utc() {
    char buf[32];
    const std::time_t t = std::time(nullptr);
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", std::gmtime(&t));
    return buf;
}

// The cell of `rows` for (variant, threads, input, batch), column `col`, or "-".
std::string cell(const Table& rows, const std::string& variant, const std::string& threads, const std::string& input,
                 const std::string& batch, const std::string& col) {
    for (const auto& r : rows)
        if (r.at("variant") == variant && r.at("threads") == threads && r.at("input") == input &&
            r.at("batch") == batch && r.count(col))
            return r.at(col);
    return "-";
}

std::string fixed(const std::string& s, int digits) {
    if (s == "-" || s.empty()) return "-";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.*f", digits, std::stod(s));
    return buf;
}

std::string threads_text(const std::string& threads) {
    return fill_phrase(threads == "1" ? "inference/one_thread" : "inference/threads", {{"n", threads}});
}

// The latency section: one table per thread count (minnow's versions, then
// PyTorch's if bench/pytorch_inference.py wrote pytorch_latency.csv), and the
// comparison with the published GPU figure.
std::string latency_section(const Table& latency, const Table& torch, const std::vector<Variant>& variants) {
    if (latency.empty()) return fill_template("inference/latency_not_measured", {});
    std::vector<std::string> thread_counts;  // as measured, most threads first
    for (const Table* t : {&latency, &torch})
        for (const auto& r : *t)
            if (std::find(thread_counts.begin(), thread_counts.end(), r.at("threads")) == thread_counts.end())
                thread_counts.push_back(r.at("threads"));
    std::sort(thread_counts.begin(), thread_counts.end(),
              [](const std::string& a, const std::string& b) { return std::stoi(a) > std::stoi(b); });
    std::string throughput_batch = "256";  // the batch of the throughput rows, as measured
    for (const auto& r : latency)
        if (r.at("batch") != "1") throughput_batch = r.at("batch");
    std::vector<std::string> torch_variants;
    for (const auto& r : torch)
        if (std::find(torch_variants.begin(), torch_variants.end(), r.at("variant")) == torch_variants.end())
            torch_variants.push_back(r.at("variant"));
    std::string tables;
    for (const auto& threads : thread_counts) {
        std::ostringstream rows;
        auto row = [&](const Table& t, const std::string& name, const std::string& label) {
            if (cell(t, name, threads, "32x32", "1", "p50_ms") == "-") return;
            rows << "| " << label << " | " << fixed(cell(t, name, threads, "32x32", "1", "p50_ms"), 2) << " / "
                 << fixed(cell(t, name, threads, "32x32", "1", "p90_ms"), 2) << " | "
                 << fixed(cell(t, name, threads, "128x128", "1", "p50_ms"), 2) << " / "
                 << fixed(cell(t, name, threads, "128x128", "1", "p90_ms"), 2) << " | "
                 << fixed(cell(t, name, threads, "32x32", throughput_batch, "img_per_s"), 0) << " | "
                 << fixed(cell(t, name, threads, "128x128", "1", "cpu_p50_ms"), 2) << " |\n";
        };
        for (const auto& v : variants) row(latency, v.name, "minnow " + v.name);
        for (const auto& t : torch_variants) row(torch, t, t);
        tables += fill_template("inference/latency_threads", {{"threads", threads_text(threads)},
                                                              {"throughput_batch", throughput_batch},
                                                              {"rows", rows.str()}});
    }

    // The published GPU figure, against the best p50 of the int8 version.
    const std::string best_name = "int8";
    std::string p50 = "-", at_threads, fp32;
    for (const auto& threads : thread_counts) {
        const std::string v = cell(latency, best_name, threads, "128x128", "1", "p50_ms");
        if (v != "-" && (p50 == "-" || std::stod(v) < std::stod(p50))) {
            p50 = v, at_threads = threads;
            fp32 = cell(latency, "fp32", threads, "128x128", "1", "p50_ms");
        }
    }
    const bool beats = p50 != "-" && std::stod(p50) < 9.0;

    // minnow's int8 against the faster of PyTorch's two int8 versions, shape by shape.
    std::ostringstream against;
    const std::vector<std::pair<std::string, std::string>> shapes = {
        {"32x32", "1"}, {"128x128", "1"}, {"32x32", throughput_batch}};
    for (const auto& threads : thread_counts)
        for (const auto& [input, batch] : shapes) {
            const std::string col = batch == "1" ? "p50_ms" : "img_per_s";
            const std::string mine = cell(latency, best_name, threads, input, batch, col);
            std::string theirs = "-", which;
            for (const std::string t : {"pytorch int8-dynamic", "pytorch int8-static"}) {
                const std::string v = cell(torch, t, threads, input, batch, col);
                if (v == "-") continue;
                const bool better = theirs == "-" || (batch == "1" ? std::stod(v) < std::stod(theirs)
                                                                   : std::stod(v) > std::stod(theirs));
                if (better) theirs = v, which = t;
            }
            if (mine == "-" || theirs == "-") continue;
            const double ratio = batch == "1" ? std::stod(theirs) / std::stod(mine) : std::stod(mine) / std::stod(theirs);
            against << "| " << threads << " | " << input << ", batch " << batch << " | " << fixed(mine, 2) << " | "
                    << fixed(theirs, 2) << " (" << which << ") | " << fixed(std::to_string(ratio), 2) << " |\n";
        }
    return fill_template(
        "inference/latency",
        {{"tables", tables},
         {"against_pytorch", against.str().empty()
                                 ? fill_template("inference/no_pytorch_int8", {})
                                 : fill_template("inference/against_pytorch_int8", {{"rows", against.str()}})},
         {"throughput_batch", throughput_batch},
         {"version", best_name},
         {"p50", fixed(p50, 2)},
         {"at_threads",
          at_threads.empty() ? "" : fill_phrase("inference/at_threads", {{"threads", threads_text(at_threads)}})},
         {"verdict", fill_phrase(beats ? "inference/beats" : "inference/does_not_beat")},
         {"speedup", fp32 != "-" && p50 != "-"
                         ? fill_phrase("inference/speedup",
                                       {{"speedup", fixed(std::to_string(std::stod(fp32) / std::stod(p50)), 1)},
                                        {"fp32", fixed(fp32, 2)}})
                         : ""}});
}

// The accuracy section: one row per version, from accuracy.csv.
// PyTorch's rows (pytorch_accuracy.csv, differences against PyTorch's own fp32) follow minnow's.
std::string accuracy_section(const Table& accuracy, const Table& torch) {
    if (accuracy.empty()) return fill_template("inference/accuracy_not_measured", {});
    std::ostringstream rows;
    for (const auto& r : accuracy)
        rows << "| minnow " << r.at("variant") << " | " << r.at("images") << " | " << r.at("accuracy_pct") << " | "
             << r.at("mean_loss") << " | " << r.at("max_abs_logit_diff_vs_fp32") << " | "
             << r.at("mean_abs_logit_diff_vs_fp32") << " | " << r.at("predictions_changed_vs_fp32") << " |\n";
    auto at = [](const std::map<std::string, std::string>& r, const std::string& k) {
        auto it = r.find(k);
        return it == r.end() ? std::string("-") : it->second;
    };
    for (const auto& r : torch)
        rows << "| " << at(r, "variant") << " | " << at(r, "images") << " | " << at(r, "accuracy") << " | "
             << at(r, "mean_loss") << " | " << at(r, "max_abs_logit_diff") << " | " << at(r, "mean_abs_logit_diff")
             << " | " << at(r, "predictions_changed") << " |\n";
    return fill_template("inference/accuracy",
                         {{"rows", rows.str()}, {"max_logit", accuracy.front().at("max_abs_logit_fp32")}});
}

// How each part was run (run_info.json), and PyTorch's runs (pytorch_info.json) if any.
std::string how_it_was_run(const fs::path& out, const nlohmann::json& info) {
    std::string lines;
    for (const auto& [part, p] : info.items()) {
        if (!p.is_object() || !p.contains("command")) continue;
        lines += fill_template("inference/run", {{"part", part},
                                                 {"command", p.value("command", "")},
                                                 {"when", p.value("when", "")},
                                                 {"threading", p.value("threading", "")},
                                                 {"cpu", p.value("cpu", "")},
                                                 {"kernel", p.value("bf16_kernel", "")},
                                                 {"int8_kernel", p.value("int8_kernel", "-")},
                                                 {"isa", p.value("instruction_sets", "-")},
                                                 {"load", p.value("load_average_at_start", "?")}});
    }
    const fs::path torch_info = out / "pytorch_info.json";
    if (fs::exists(torch_info)) {
        std::ifstream in(torch_info);
        const nlohmann::json runs = nlohmann::json::parse(in).value("runs", nlohmann::json::object());
        for (const auto& [threads, t] : runs.items())
            lines += fill_template("inference/pytorch_run",
                                   {{"command", t.value("command", "")},
                                    {"when", t.value("when", "")},
                                    {"torch", t.value("torch", "")},
                                    {"threads", std::to_string(t.value("threads", 0))},
                                    {"load", t.value("load_average", nlohmann::json::array()).dump()},
                                    {"note", t.value("note", "")}});
    }
    return lines;
}

// latency.png: batch-1 p50 of every version (minnow's, then PyTorch's) at
// 32x32 and 128x128, at the largest thread count measured, from
// latency_figure.csv. False if there is nothing to draw or no gnuplot.
bool latency_figure(const fs::path& out, const Table& latency, const Table& torch) {
    std::string threads;
    for (const Table* t : {&latency, &torch})
        for (const auto& r : *t)
            if (threads.empty() || std::stoi(r.at("threads")) > std::stoi(threads)) threads = r.at("threads");
    if (threads.empty()) return false;
    std::ostringstream csv;
    csv << "index,version,p50_32x32_ms,p50_128x128_ms\n";
    int index = 0;
    for (const auto& [table, prefix] : {std::pair{&latency, std::string("minnow ")}, std::pair{&torch, std::string()}})
        for (const auto& r : *table)
            if (r.at("threads") == threads && r.at("input") == "32x32" && r.at("batch") == "1")
                csv << ++index << "," << prefix << r.at("variant") << ","
                    << cell(*table, r.at("variant"), threads, "32x32", "1", "p50_ms") << ","
                    << cell(*table, r.at("variant"), threads, "128x128", "1", "p50_ms") << "\n";
    const fs::path data = out / "latency_figure.csv";
    write_text_atomically(data.string(), csv.str());
    Figure fig("Batch-1 latency by version (p50, " + threads_text(threads) + ")", "", "ms", /*log_y=*/true);
    fig.extra = "set xtics rotate by -35 left\nset bmargin 9\nset xrange [0.5:" + std::to_string(index) + ".5]";
    fig.series.push_back({data.string(), "index", "p50_32x32_ms", "32x32", "points pt 7 ps 1.5", "version"});
    fig.series.push_back({data.string(), "index", "p50_128x128_ms", "128x128", "points pt 5 ps 1.5", "version"});
    return plot((out / "latency.png").string(), fig);
}

// summary.md from whichever of latency.csv, accuracy.csv and pytorch_latency.csv exist.
void write_summary(const Options& o, const nlohmann::json& info, const std::vector<Variant>& variants) {
    const fs::path out(o.out);
    const Table latency = read_csv(out / "latency.csv"), accuracy = read_csv(out / "accuracy.csv"),
                torch = read_csv(out / "pytorch_latency.csv"), torch_accuracy = read_csv(out / "pytorch_accuracy.csv");
    const bool figure = latency_figure(out, latency, torch);
    std::string versions;
    for (const auto& v : variants)
        versions += fill_template("inference/version", {{"name", v.name}, {"description", v.description}});
    const std::string md = fill_template(
        "inference/summary",
        {{"checkpoint", info.value("checkpoint", o.checkpoint)},
         {"epochs", info.contains("epochs_done")
                        ? fill_phrase("inference/epochs", {{"epochs", info["epochs_done"].get<std::string>()}})
                        : ""},
         {"versions", versions},
         {"latency", latency_section(latency, torch, variants)},
         {"accuracy", accuracy_section(accuracy, torch_accuracy)},
         {"figure", figure ? fill_template("inference/figure", {}) : ""},
         {"runs", how_it_was_run(out, info)}});
    write_text_atomically((out / "summary.md").string(), md);
}

int run(const Options& o) {
    setup_threads(o.threads);
    require_writable_folder(o.out, "--out");
    // Making the versions takes a while (int8 is calibrated three ways): say so first.
    std::printf("study_inference: the versions of %s (int8 calibrated on up to %lld training images)\n",
                o.checkpoint.c_str(), static_cast<long long>(o.calibration));
    std::fflush(stdout);
    std::vector<Variant> variants = make_variants(o);

    const fs::path info_path = fs::path(o.out) / "run_info.json";
    nlohmann::json info = nlohmann::json::object();
    if (fs::exists(info_path)) {  // the parts run before; a damaged file is started afresh
        std::ifstream in(info_path);
        info = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
        if (!info.is_object()) {
            std::fprintf(stderr, "warning: %s is not a JSON object: started afresh\n", info_path.c_str());
            info = nlohmann::json::object();
        }
    }
    info["checkpoint"] = o.checkpoint;
    {
        SafetensorsFile f = load_safetensors(o.checkpoint);
        auto it = f.metadata.find("epochs_done");
        if (it != f.metadata.end()) info["epochs_done"] = it->second;
    }
    double load[3] = {0, 0, 0};
    getloadavg(load, 3);  // how busy the machine was with other programs
    char load_text[64];
    std::snprintf(load_text, sizeof load_text, "%.2f %.2f %.2f", load[0], load[1], load[2]);
    // The OpenMP waiting policy matters on a shared machine (see the summary).
    std::string environment;
    for (const char* name : {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MINNOW_NUM_THREADS"})
        if (const char* v = std::getenv(name)) environment += std::string(environment.empty() ? "" : " ") + name + "=" + v;
    const nlohmann::json part{{"command", (environment.empty() ? "" : environment + " ") + o.command},
                              {"when", now_utc()},
                              {"load_average_at_start", load_text},
                              {"threading", threading_info()},
                              {"cpu", cpu_model()},
                              {"bf16_kernel", bf16::kernel_name(bf16::best_kernel())},
                              {"int8_kernel", int8::kernel_name(int8::best_kernel())},
                              {"instruction_sets", cpu_instruction_sets()},
                              {"kernels", kernels_info()}};
    std::printf("%s\n%s, %s\n%s\n", o.checkpoint.c_str(), threading_info().c_str(), cpu_model().c_str(),
                kernels_info().c_str());
    if (o.only == "all" || o.only == "latency") {
        std::printf("latency (%d passes at batch 1, %d at batch %lld, in %d rounds):\n", o.iters, o.throughput_iters,
                    static_cast<long long>(o.throughput_batch), o.rounds);
        run_latency(o, variants);
        info["latency, " + std::to_string(get_num_threads()) + (get_num_threads() == 1 ? " thread" : " threads")] = part;
    }
    if (o.only == "all" || o.only == "accuracy") {
        std::printf("accuracy:\n");
        run_accuracy(o, variants);
        info["accuracy"] = part;
    }
    write_text_atomically(info_path.string(), info.dump(2) + "\n");
    write_summary(o, info, variants);
    std::printf("wrote %s/{latency.csv, accuracy.csv, run_info.json, summary.md}\n", o.out.c_str());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 0; i < argc; ++i) o.command += (i ? " " : "") + std::string(i ? argv[i] : "study_inference");
    CLI::App app{"study_inference: eval latency, throughput and accuracy of fp32, BatchNorm-folded, bfloat16 "
                 "and int8 versions of a trained model"};
    app.add_option("--checkpoint", o.checkpoint, "trained model (train_cifar checkpoint or --save file)")->required();
    app.add_option("--out", o.out, "output folder")->capture_default_str();
    app.add_option("--only", o.only, "which part: all, latency or accuracy")
        ->check(CLI::IsMember({"all", "latency", "accuracy"}))
        ->capture_default_str();
    app.add_option("--threads", o.threads, "threads (default: MINNOW_NUM_THREADS or every core)")
        ->check(flag::threads());
    app.add_option("--iters", o.iters, "timed passes per version at batch 1")
        ->check(flag::whole(1, 10000000))
        ->capture_default_str();
    app.add_option("--throughput-iters", o.throughput_iters, "timed passes per version at the throughput batch")
        ->check(flag::whole(1, 10000000))
        ->capture_default_str();
    app.add_option("--throughput-batch", o.throughput_batch, "batch of the throughput passes (32x32)")
        ->check(flag::whole(1, 65536))
        ->capture_default_str();
    app.add_option("--rounds", o.rounds, "the timed passes are split into this many rounds over the versions")
        ->check(flag::whole(1, 10000))
        ->capture_default_str();
    app.add_option("--data", o.data, "cifar-10-batches-bin folder or image folders with train/ and test/");
    app.add_option("--test-limit", o.test_limit, "use N test images, evenly across the classes (0: all)")
        ->check(flag::whole(0, int64_t{1000000000}))
        ->capture_default_str();
    app.add_option("--batch-size", o.batch_size, "evaluation batch size for the accuracy")
        ->check(flag::whole(1, 10000))
        ->capture_default_str();
    app.add_option("--calibration", o.calibration, "training images the int8 versions are calibrated on")
        ->check(flag::whole(1, 50000))
        ->capture_default_str();
    app.add_option("--cache-dir", o.cache_dir, "where decoded image folders are cached")->capture_default_str();
    return run_app(app, argc, argv, [&] { return run(o); });
}
