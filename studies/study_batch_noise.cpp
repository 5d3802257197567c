// study_batch_noise: how noisy BatchNorm's batch statistics are, what that
// noise does to the normalised activations, and why LayerNorm has none.
//
//     study_batch_noise --checkpoint cnn.safetensors --threads 1
//     study_batch_noise --train-limit 10000 --batches 200     # quicker, fresh model
//
// Two places of the reference cnn are looked at ("sites"):
//   input  the normalised input pixels (3 channels, 32x32),
//   conv1  the output of features.0, the first Conv2d, i.e. what its
//          BatchNorm (features.1) normalises (64 channels, 32x32),
// with the weights of --checkpoint (a train_cifar checkpoint or a saved cnn)
// or, without one, of a fresh cnn initialised from --seed.
//
// 1. Population. One pass over the training images (no augmentation) keeps,
//    per image and channel, the mean and the biased variance of its H*W
//    values. That is all a batch's statistics need: for a batch S of B images
//        mu_S  = mean over i in S of mean_i
//        var_S = mean over i in S of var_i + mean over i in S of (mean_i - mu_S)^2
//    which is exactly the mean and biased variance over the B*H*W values that
//    BatchNorm2d computes (checked against the real batches of part 2). The
//    population mean/variance per channel are the same formulas over all images.
// 2. Spread of the batch statistics. For each batch size, --batches random
//    batches (B distinct images each), and per channel the spread (standard
//    deviation over batches) of (mu_S - mu) / sigma and of var_S / sigma^2,
//    averaged over channels, beside two predictions: i.i.d. values
//    (1/sqrt(m) and sqrt(2/m) for Gaussian values, m = B*H*W), and the
//    image-level one sqrt(Var(mean_i) / sigma^2 / B) (the batch mean is a mean
//    of B image means; neighbouring pixels are correlated, so an image is
//    worth fewer than H*W independent values). 1/spread^2 is the effective
//    sample size.
// 3. Coupling. One probe image is put in --probe-batches batches with random
//    companions; each batch goes through the real layers in training mode:
//    batch_norm (no affine), layer_norm over (C, H, W) and group_norm with one
//    group. Per element of the probe's output, the standard deviation over the
//    batches: how much the probe's normalised activation depends on the other
//    images. LayerNorm/GroupNorm use the probe's own statistics only, so it
//    is zero; the app also checks that their output equals that of the probe
//    normalised alone, bit for bit.
// 4. A numeric demo: 8 images, per-channel and per-sample mean and variance
//    before and after batch_norm and layer_norm.
//
// Writes into --out: population_<site>.csv, spread_<site>.csv, probe_<site>.csv,
// demo_per_channel.csv, demo_per_sample.csv, spread_mean.png, spread_var.png,
// probe_noise.png, probe_noise_log.png (with their gnuplot scripts) and summary.md.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>

#include "studies/study.h"
#include "core/safetensors.h"
#include "layers/batchnorm.h"
#include "layers/groupnorm.h"
#include "layers/layernorm.h"

using namespace minnow;
using namespace minnow::app;

namespace {

constexpr float kEps = 1e-5f;  // BatchNorm2d's, LayerNorm's and GroupNorm's default

// A place in the network whose values are normalised, and its statistics.
struct Site {
    std::string name;   // "input", "conv1"
    std::string where;  // for the summary
    int64_t C = 0, HW = 0;
    // Per image i and channel c, at [i * C + c]: mean and biased variance of its H*W values.
    std::vector<double> img_mean, img_var;
    // Per channel, over the whole training set (all its N*H*W values).
    std::vector<double> pop_mean, pop_var;
    std::vector<double> between_var;  // variance over images of the image means
};

// What the study feeds and reads: the input batch, or features.0 of the cnn.
struct Network {
    std::shared_ptr<Module> model;
    Module* conv1 = nullptr;
    std::string description;
    Tensor site_output(size_t site, const Tensor& images) const {
        return site == 0 ? images : (*conv1)(images);
    }
};

Network load_network(const std::string& checkpoint, uint64_t seed) {
    Network net;
    if (checkpoint.empty()) {
        manual_seed(seed);
        net.model = make_model("cnn", "batch");
        net.description = "a fresh cnn (norm batch) initialised with seed " + std::to_string(seed) +
                          " (untrained)";
    } else {
        SafetensorsFile f = load_safetensors(checkpoint);
        auto meta = [&](const std::string& key) {
            auto it = f.metadata.find(key);
            return it == f.metadata.end() ? std::string() : it->second;
        };
        const std::string model = meta("model"), norm = meta("norm").empty() ? "batch" : meta("norm");
        if (!model.empty() && model != "cnn")
            throw Error(checkpoint + ": a " + model + " checkpoint; this study reads the features.0 of a cnn");
        net.model = make_model("cnn", norm);
        net.model->load_state_dict(model_entries(f), true, checkpoint);
        net.description = "the cnn (norm " + norm + ") of " + checkpoint;
        if (!meta("epochs_done").empty())
            net.description += ", trained " + meta("epochs_done") + " epochs (" + meta("step") + " steps)";
    }
    auto& cnn = dynamic_cast<ReferenceCNN&>(*net.model);
    net.conv1 = (*cnn.features)[0].get();
    if (net.conv1->type_name() != "Conv2d") throw Error("study_batch_noise: features.0 of the cnn is not a Conv2d");
    net.model->eval();  // conv1 has no train/eval difference; nothing else runs
    return net;
}

// B distinct indices of `pool`, uniformly: a partial Fisher-Yates shuffle of
// `pool` in place (the rest of `pool` stays a permutation, so it can be reused).
std::vector<int64_t> draw(std::vector<int64_t>& pool, int64_t B, Generator& gen) {
    std::vector<int64_t> out(B);
    const int64_t n = static_cast<int64_t>(pool.size());
    for (int64_t k = 0; k < B; ++k) {
        const int64_t j = k + static_cast<int64_t>(gen.randint(static_cast<uint64_t>(n - k)));
        std::swap(pool[k], pool[j]);
        out[k] = pool[k];
    }
    return out;
}

// The normalised images of `indices`, in that order, as the DataLoader makes them.
Tensor load_images(const ImageSet& set, const std::vector<int64_t>& indices) {
    auto part = std::make_shared<ImageSet>(subset(set, indices));
    LoaderOptions lo = test_loader_options(static_cast<int64_t>(indices.size()));
    lo.prefetch = 0;
    DataLoader loader(part, lo);
    loader.start_epoch(0);
    Batch b;
    loader.next(b);
    return b.images;
}

// Mean and biased variance of n floats (two passes, in double).
std::pair<double, double> moments(const float* p, int64_t n, int64_t stride = 1) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += p[i * stride];
    const double mu = s / n;
    double q = 0;
    for (int64_t i = 0; i < n; ++i) q += (p[i * stride] - mu) * (p[i * stride] - mu);
    return {mu, q / n};
}

// Per channel of y [N, C, H, W]: mean and biased variance over its N*H*W values.
void channel_moments(const Tensor& y, std::vector<double>& mean, std::vector<double>& var) {
    const int64_t N = y.size(0), C = y.size(1), HW = y.size(2) * y.size(3);
    mean.assign(C, 0);
    var.assign(C, 0);
    for (int64_t c = 0; c < C; ++c) {
        double s = 0;
        for (int64_t n = 0; n < N; ++n)
            for (int64_t k = 0; k < HW; ++k) s += y.data()[(n * C + c) * HW + k];
        mean[c] = s / (N * HW);
        double q = 0;
        for (int64_t n = 0; n < N; ++n)
            for (int64_t k = 0; k < HW; ++k) {
                const double d = y.data()[(n * C + c) * HW + k] - mean[c];
                q += d * d;
            }
        var[c] = q / (N * HW);
    }
}

// A batch's per-channel mean and biased variance from the per-image ones (see the top).
void batch_stats(const Site& s, const std::vector<int64_t>& batch, std::vector<double>& mu,
                 std::vector<double>& var) {
    const double B = static_cast<double>(batch.size());
    mu.assign(s.C, 0);
    var.assign(s.C, 0);
    for (int64_t i : batch)
        for (int64_t c = 0; c < s.C; ++c) mu[c] += s.img_mean[i * s.C + c];
    for (int64_t c = 0; c < s.C; ++c) mu[c] /= B;
    for (int64_t i : batch)
        for (int64_t c = 0; c < s.C; ++c) {
            const double d = s.img_mean[i * s.C + c] - mu[c];
            var[c] += s.img_var[i * s.C + c] + d * d;
        }
    for (int64_t c = 0; c < s.C; ++c) var[c] /= B;
}

double average(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / v.size(); }

// Running sums for a standard deviation (and covariance) over draws.
struct Moments2 {
    double n = 0, sx = 0, sxx = 0, sy = 0, syy = 0, sxy = 0;
    void add(double x, double y) {
        n += 1;
        sx += x, sxx += x * x, sy += y, syy += y * y, sxy += x * y;
    }
    double mean_x() const { return sx / n; }
    double mean_y() const { return sy / n; }
    double var_x() const { return std::max(0.0, (sxx - sx * sx / n) / (n - 1)); }
    double var_y() const { return std::max(0.0, (syy - sy * sy / n) / (n - 1)); }
    double cov() const { return (sxy - sx * sy / n) / (n - 1); }
};

// What part 2 measured at one batch size, for one site.
struct SpreadRow {
    int64_t B = 0;
    double mean_spread = 0, mean_spread_min = 0, mean_spread_max = 0, image_level_prediction = 0;
    double var_ratio_mean = 0, var_spread = 0, var_spread_min = 0, var_spread_max = 0;
    std::vector<Moments2> per_channel;  // x = (mu_S - mu)/sigma, y = var_S/sigma^2
};

// What part 3 measured at one batch size, for one site.
struct ProbeRow {
    int64_t B = 0;
    double bn_std_rms = 0, bn_std_max = 0, bn_prediction = 0;
    double ln_max_diff = 0, gn_max_diff = 0;  // max |out(probe in batch) - out(probe alone)|
    double ln_std_max = 0, gn_std_max = 0;
};

std::string join(const std::vector<int64_t>& v) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
    return s;
}


// For the findings: the range of a value over every channel / sample of both sites.
struct Range {
    double lo = INFINITY, hi = -INFINITY;
    void add(double v) { lo = std::min(lo, v), hi = std::max(hi, v); }
    std::string text(int precision = 3) const { return num(lo, precision) + " to " + num(hi, precision); }
};

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The study: its settings, then one member function per part (see the top),
// each filling the results the later parts and the summary read.
struct BatchNoiseStudy {
    StudyOptions o;
    std::string checkpoint;
    std::vector<int64_t> batch_sizes{2, 4, 8, 16, 32, 64, 128, 256, 512};
    int64_t batches = 2000, probe_batches = 200, demo_images = 8, demo_channels = 4;

    // The data and the network.
    std::string root;
    std::shared_ptr<ImageSet> train_set;
    int64_t N = 0;
    Network net;
    std::vector<int64_t> everyone;  // 0 .. N-1
    // 1. population
    std::vector<Site> sites;
    double population_seconds = 0;
    // 2. spread: site -> one row per batch size
    std::map<std::string, std::vector<SpreadRow>> spread;
    double spread_seconds = 0;
    // 3. the probe image
    int64_t probe = 0;
    std::map<std::string, std::vector<ProbeRow>> probe_rows;
    double shortcut_mean_err = 0, shortcut_var_err = 0;  // part 1's formula vs the real batches
    double probe_seconds = 0;
    // 4. the numeric demo
    std::vector<int64_t> demo_batch;
    std::vector<std::vector<std::string>> demo_channel_rows, demo_sample_rows;
    Range bn_channel_mean, bn_channel_var, bn_sample_mean, bn_sample_var;
    Range ln_channel_mean, ln_channel_var, ln_sample_mean, ln_sample_var;
    double bn_var_vs_eps_formula = 0;  // max |var after BN - var/(var+eps)|

    void load();
    void measure_population();
    void measure_spread_of_batch_statistics();
    void measure_probe_among_companions();
    void numeric_demo();
    void plot_figures() const;
    TemplateValues how_it_was_run(int argc, char** argv, double total_seconds) const;
    std::string population_table() const;
    std::string spread_tables() const;
    std::string probe_tables() const;
    TemplateValues findings() const;
};

// The training images, the network, and the checks of the flags.
void BatchNoiseStudy::load() {
    setup_threads(o.threads);
    require_writable_folder(o.out, "--out");
    root = find_cifar10(o.data);
    train_set = load_split(root, true, o.train_limit, o.cache_dir);
    N = train_set->n;
    for (int64_t B : batch_sizes)
        if (B < 2 || B > N - 1)
            throw UsageError("--batch-sizes: " + std::to_string(B) + " is not in [2, " + std::to_string(N - 1) +
                             "] (the " + std::to_string(N) + " training images - 1)");
    if (demo_images > N)
        throw UsageError("--demo-images " + std::to_string(demo_images) + ": more than the " + std::to_string(N) +
                         " training images");
    net = load_network(checkpoint, o.seed);
    std::printf("batch noise: %lld training images of %s; %s; %s\n", static_cast<long long>(N), root.c_str(),
                net.description.c_str(), threading_info().c_str());
}

// 1. Per image and channel, the mean and variance at both sites; the
// population statistics per channel (population_<site>.csv).
void BatchNoiseStudy::measure_population() {
    sites.resize(2);
    sites[0].name = "input";
    sites[0].where = "the normalised input pixels";
    sites[1].name = "conv1";
    sites[1].where = "the output of features.0 (first Conv2d), the input of its BatchNorm";
    const auto t_pop = Clock::now();
    {
        DataLoader loader(train_set, test_loader_options(500));
        loader.start_epoch(0);
        Batch b;
        while (loader.next(b)) {
            for (size_t s = 0; s < sites.size(); ++s) {
                Site& site = sites[s];
                Tensor y = net.site_output(s, b.images);
                if (site.C == 0) {
                    site.C = y.size(1);
                    site.HW = y.size(2) * y.size(3);
                    site.img_mean.assign(N * site.C, 0);
                    site.img_var.assign(N * site.C, 0);
                }
                for (int64_t k = 0; k < y.size(0); ++k)
                    for (int64_t c = 0; c < site.C; ++c) {
                        auto [m, v] = moments(y.data() + (k * site.C + c) * site.HW, site.HW);
                        site.img_mean[b.indices[k] * site.C + c] = m;
                        site.img_var[b.indices[k] * site.C + c] = v;
                    }
            }
        }
    }
    everyone.assign(N, 0);
    std::iota(everyone.begin(), everyone.end(), 0);
    for (Site& s : sites) {
        batch_stats(s, everyone, s.pop_mean, s.pop_var);
        s.between_var.assign(s.C, 0);
        for (int64_t i = 0; i < N; ++i)
            for (int64_t c = 0; c < s.C; ++c) {
                const double d = s.img_mean[i * s.C + c] - s.pop_mean[c];
                s.between_var[c] += d * d / N;
            }
        for (int64_t c = 0; c < s.C; ++c)
            if (!(s.pop_var[c] > 1e-12))
                throw Error("site " + s.name + ": channel " + std::to_string(c) +
                            " is constant over the training set; its spread is undefined");
        CsvFile f(o.out + "/population_" + s.name + ".csv",
                  {"channel", "mean", "std", "between_image_fraction", "effective_values_per_image"});
        for (int64_t c = 0; c < s.C; ++c)
            f.row({std::to_string(c), num(s.pop_mean[c]), num(std::sqrt(s.pop_var[c])),
                   num(s.between_var[c] / s.pop_var[c]), num(s.pop_var[c] / s.between_var[c])});
    }
    population_seconds = seconds_since(t_pop);
    std::printf("population statistics: %.0f s\n", population_seconds);
    std::fflush(stdout);
}

// 2. The spread of the batch statistics over random batches, per batch size (spread_<site>.csv).
void BatchNoiseStudy::measure_spread_of_batch_statistics() {
    const auto t_spread = Clock::now();
    for (int64_t B : batch_sizes) {
        Generator gen(DataLoader::derive_seed(o.seed, B, 1));
        std::vector<int64_t> pool = everyone;
        std::vector<SpreadRow> rows(sites.size());
        for (size_t s = 0; s < sites.size(); ++s) rows[s].per_channel.assign(sites[s].C, Moments2{});
        std::vector<double> mu, var;
        for (int64_t r = 0; r < batches; ++r) {
            const std::vector<int64_t> batch = draw(pool, B, gen);  // the same batches at both sites
            for (size_t s = 0; s < sites.size(); ++s) {
                const Site& site = sites[s];
                batch_stats(site, batch, mu, var);
                for (int64_t c = 0; c < site.C; ++c)
                    rows[s].per_channel[c].add((mu[c] - site.pop_mean[c]) / std::sqrt(site.pop_var[c]),
                                               var[c] / site.pop_var[c]);
            }
        }
        for (size_t s = 0; s < sites.size(); ++s) {
            const Site& site = sites[s];
            SpreadRow& row = rows[s];
            row.B = B;
            std::vector<double> ms, vs, vm, pred;
            const double fpc = static_cast<double>(N - B) / (N - 1);  // sampling without replacement
            for (int64_t c = 0; c < site.C; ++c) {
                ms.push_back(std::sqrt(row.per_channel[c].var_x()));
                vs.push_back(std::sqrt(row.per_channel[c].var_y()));
                vm.push_back(row.per_channel[c].mean_y());
                pred.push_back(std::sqrt(site.between_var[c] / site.pop_var[c] / B * fpc));
            }
            row.mean_spread = average(ms);
            row.mean_spread_min = *std::min_element(ms.begin(), ms.end());
            row.mean_spread_max = *std::max_element(ms.begin(), ms.end());
            row.image_level_prediction = average(pred);
            row.var_spread = average(vs);
            row.var_spread_min = *std::min_element(vs.begin(), vs.end());
            row.var_spread_max = *std::max_element(vs.begin(), vs.end());
            row.var_ratio_mean = average(vm);
            spread[site.name].push_back(std::move(row));
        }
    }
    for (const Site& s : sites) {
        CsvFile f(o.out + "/spread_" + s.name + ".csv",
                  {"batch_size", "values_per_channel", "batches", "mean_spread", "mean_spread_min_channel",
                   "mean_spread_max_channel", "iid_mean_spread", "image_level_prediction",
                   "effective_sample_size", "effective_per_image", "var_ratio_mean", "var_spread",
                   "var_spread_min_channel", "var_spread_max_channel", "iid_gaussian_var_spread",
                   "effective_sample_size_var"});
        for (const SpreadRow& r : spread[s.name]) {
            const double m = static_cast<double>(r.B * s.HW);
            f.row({std::to_string(r.B), num(m), std::to_string(batches), num(r.mean_spread),
                   num(r.mean_spread_min), num(r.mean_spread_max), num(1 / std::sqrt(m)),
                   num(r.image_level_prediction), num(1 / (r.mean_spread * r.mean_spread)),
                   num(1 / (r.mean_spread * r.mean_spread) / r.B), num(r.var_ratio_mean), num(r.var_spread),
                   num(r.var_spread_min), num(r.var_spread_max), num(std::sqrt(2 / m)),
                   num(2 / (r.var_spread * r.var_spread))});
        }
    }
    spread_seconds = seconds_since(t_spread);
    std::printf("spread of the batch statistics (%lld batches per size): %.0f s\n",
                static_cast<long long>(batches), spread_seconds);
    std::fflush(stdout);
}

// 3. One probe image among random companions, through BatchNorm, LayerNorm
// and GroupNorm(1, C) (probe_<site>.csv).
void BatchNoiseStudy::measure_probe_among_companions() {
    Generator probe_gen(DataLoader::derive_seed(o.seed, 0, 2));
    probe = static_cast<int64_t>(probe_gen.randint(static_cast<uint64_t>(N)));
    std::vector<int64_t> companions_pool;
    for (int64_t i = 0; i < N; ++i)
        if (i != probe) companions_pool.push_back(i);
    // The probe alone: its population-standardised values z (for the
    // first-order prediction) and its LayerNorm/GroupNorm outputs.
    std::vector<Tensor> probe_ln_alone(sites.size()), probe_gn_alone(sites.size());
    std::vector<std::vector<double>> z_mean(sites.size()), z_sq_mean(sites.size());
    {
        Tensor images = load_images(*train_set, {probe});
        for (size_t s = 0; s < sites.size(); ++s) {
            const Site& site = sites[s];
            Tensor y = net.site_output(s, images);
            probe_ln_alone[s] = layer_norm(y, {y.size(1), y.size(2), y.size(3)}, Tensor(), Tensor(), kEps);
            probe_gn_alone[s] = group_norm(y, 1, Tensor(), Tensor(), kEps);
            z_mean[s].assign(site.C, 0);
            z_sq_mean[s].assign(site.C, 0);
            for (int64_t c = 0; c < site.C; ++c)
                for (int64_t k = 0; k < site.HW; ++k) {
                    const double z = (y.data()[c * site.HW + k] - site.pop_mean[c]) / std::sqrt(site.pop_var[c]);
                    z_mean[s][c] += z / site.HW;
                    z_sq_mean[s][c] += z * z / site.HW;
                }
        }
    }
    const auto t_probe = Clock::now();
    for (size_t bi = 0; bi < batch_sizes.size(); ++bi) {
        const int64_t B = batch_sizes[bi];
        Generator gen(DataLoader::derive_seed(o.seed, B, 3));
        std::vector<int64_t> pool = companions_pool;
        // Per normalisation (BatchNorm, LayerNorm, GroupNorm(1,C)), per
        // element of the probe's output: sums of its difference from the
        // first batch's value and of its square. (Shifted so that values
        // equal in every batch give a spread of exactly 0, not rounding noise.)
        struct Acc {
            std::vector<float> first[3];
            std::vector<double> s[3], ss[3];
            double ln_diff = 0, gn_diff = 0;
        };
        std::vector<Acc> acc(sites.size());
        for (int64_t r = 0; r < probe_batches; ++r) {
            std::vector<int64_t> batch{probe};
            for (int64_t i : draw(pool, B - 1, gen)) batch.push_back(i);
            Tensor images = load_images(*train_set, batch);
            for (size_t s = 0; s < sites.size(); ++s) {
                const Site& site = sites[s];
                Tensor y = net.site_output(s, images);
                const int64_t E = site.C * site.HW;  // the probe's elements: the first E of each output
                // The real layers, training mode, no affine: y -> xhat.
                Tensor bn = batch_norm(y, Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1f, kEps);
                Tensor ln = layer_norm(y, {y.size(1), y.size(2), y.size(3)}, Tensor(), Tensor(), kEps);
                Tensor gn = group_norm(y, 1, Tensor(), Tensor(), kEps);
                Acc& a = acc[s];
                const Tensor* outs[3] = {&bn, &ln, &gn};
                for (int k = 0; k < 3; ++k) {
                    const float* p = outs[k]->data();
                    if (a.s[k].empty()) {
                        a.first[k].assign(p, p + E);
                        a.s[k].assign(E, 0);
                        a.ss[k].assign(E, 0);
                    }
                    for (int64_t e = 0; e < E; ++e) {
                        const double d = double(p[e]) - a.first[k][e];
                        a.s[k][e] += d;
                        a.ss[k][e] += d * d;
                    }
                }
                for (int64_t e = 0; e < E; ++e) {
                    a.ln_diff = std::max(a.ln_diff, std::fabs(double(ln.data()[e]) - probe_ln_alone[s].data()[e]));
                    a.gn_diff = std::max(a.gn_diff, std::fabs(double(gn.data()[e]) - probe_gn_alone[s].data()[e]));
                }
                // Part 1 used per-image statistics computed in 500-image
                // chunks; check they give this batch's own statistics.
                std::vector<double> mu_direct, var_direct, mu_formula, var_formula;
                channel_moments(y, mu_direct, var_direct);
                batch_stats(site, batch, mu_formula, var_formula);
                for (int64_t c = 0; c < site.C; ++c) {
                    shortcut_mean_err = std::max(shortcut_mean_err, std::fabs(mu_direct[c] - mu_formula[c]) /
                                                                        std::sqrt(site.pop_var[c]));
                    shortcut_var_err = std::max(shortcut_var_err,
                                                std::fabs(var_direct[c] - var_formula[c]) / site.pop_var[c]);
                }
            }
        }
        for (size_t s = 0; s < sites.size(); ++s) {
            const Site& site = sites[s];
            const Acc& a = acc[s];
            ProbeRow row;
            row.B = B;
            // Standard deviation over the batches per element: its rms and max over the elements.
            auto spread_of = [&](int k, double& rms, double& max) {
                const double R = static_cast<double>(probe_batches);
                double var_sum = 0;
                max = 0;
                for (size_t e = 0; e < a.s[k].size(); ++e) {
                    const double v = std::max(0.0, (a.ss[k][e] - a.s[k][e] * a.s[k][e] / R) / (R - 1));
                    var_sum += v;
                    max = std::max(max, std::sqrt(v));
                }
                rms = std::sqrt(var_sum / a.s[k].size());
            };
            double ln_rms = 0, gn_rms = 0;
            spread_of(0, row.bn_std_rms, row.bn_std_max);
            spread_of(1, ln_rms, row.ln_std_max);
            spread_of(2, gn_rms, row.gn_std_max);
            // First order: xhat ~ z - dm - z dv / 2 with dm = (mu_S - mu)/sigma,
            // dv = var_S/sigma^2 - 1, their (co)variances from part 2 at this B.
            const SpreadRow& sr = spread[site.name][bi];
            double pred = 0;
            for (int64_t c = 0; c < site.C; ++c) {
                const Moments2& m = sr.per_channel[c];
                pred += m.var_x() + z_sq_mean[s][c] * m.var_y() / 4 + z_mean[s][c] * m.cov();
            }
            row.bn_prediction = std::sqrt(std::max(0.0, pred / site.C));
            row.ln_max_diff = a.ln_diff;
            row.gn_max_diff = a.gn_diff;
            probe_rows[site.name].push_back(row);
        }
        std::printf("  probe among %lld companions: %.0f s so far\n", static_cast<long long>(B - 1),
                    seconds_since(t_probe));
        std::fflush(stdout);
    }
    for (const Site& s : sites) {
        CsvFile f(o.out + "/probe_" + s.name + ".csv",
                  {"batch_size", "batches", "batchnorm_std_rms", "batchnorm_std_max", "first_order_prediction",
                   "layernorm_std_max", "groupnorm1_std_max", "layernorm_max_diff_from_alone",
                   "groupnorm1_max_diff_from_alone"});
        for (const ProbeRow& r : probe_rows[s.name]) {
            f.row({std::to_string(r.B), std::to_string(probe_batches), num(r.bn_std_rms), num(r.bn_std_max),
                   num(r.bn_prediction), num(r.ln_std_max), num(r.gn_std_max), num(r.ln_max_diff),
                   num(r.gn_max_diff)});
        }
    }
    probe_seconds = seconds_since(t_probe);
}

// 4. A few images before and after batch_norm and layer_norm (demo_per_*.csv).
void BatchNoiseStudy::numeric_demo() {
    Generator demo_gen(DataLoader::derive_seed(o.seed, 0, 4));
    std::vector<int64_t> demo_pool = everyone;
    demo_batch = draw(demo_pool, demo_images, demo_gen);
    Tensor demo_input = load_images(*train_set, demo_batch);
    CsvFile demo_c(o.out + "/demo_per_channel.csv",
                   {"site", "channel", "mean_before", "var_before", "mean_after_batchnorm", "var_after_batchnorm",
                    "var_over_var_plus_eps", "mean_after_layernorm", "var_after_layernorm"});
    CsvFile demo_s(o.out + "/demo_per_sample.csv",
                   {"site", "sample", "image_index", "mean_before", "var_before", "mean_after_batchnorm",
                    "var_after_batchnorm", "mean_after_layernorm", "var_after_layernorm"});
    auto csv_cells = [](const std::vector<double>& v) {
        std::vector<std::string> out;
        for (double x : v) out.push_back(num(x, 9));
        return out;
    };
    for (size_t s = 0; s < sites.size(); ++s) {
        const Site& site = sites[s];
        Tensor y = net.site_output(s, demo_input);
        Tensor bn = batch_norm(y, Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1f, kEps);
        Tensor ln = layer_norm(y, {y.size(1), y.size(2), y.size(3)}, Tensor(), Tensor(), kEps);
        std::vector<double> m0, v0, m1, v1, m2, v2;
        channel_moments(y, m0, v0);
        channel_moments(bn, m1, v1);
        channel_moments(ln, m2, v2);
        for (int64_t c = 0; c < site.C; ++c) {
            const double expected_var = v0[c] / (v0[c] + kEps);
            std::vector<std::string> csv_row{site.name, std::to_string(c)};
            for (auto& cell : csv_cells({m0[c], v0[c], m1[c], v1[c], expected_var, m2[c], v2[c]}))
                csv_row.push_back(cell);
            demo_c.row(csv_row);
            if (s == 0 || c < demo_channels)
                demo_channel_rows.push_back({site.name + " " + std::to_string(c), num(m0[c], 5), num(v0[c], 5),
                                             num(m1[c], 3), num(v1[c], 7), num(expected_var, 7), num(m2[c], 4),
                                             num(v2[c], 4)});
            bn_channel_mean.add(m1[c]);
            bn_channel_var.add(v1[c]);
            ln_channel_mean.add(m2[c]);
            ln_channel_var.add(v2[c]);
            bn_var_vs_eps_formula = std::max(bn_var_vs_eps_formula, std::fabs(v1[c] - expected_var));
        }
        const int64_t per_sample = site.C * site.HW;
        for (int64_t n = 0; n < demo_images; ++n) {
            auto [a0, b0] = moments(y.data() + n * per_sample, per_sample);
            auto [a1, b1] = moments(bn.data() + n * per_sample, per_sample);
            auto [a2, b2] = moments(ln.data() + n * per_sample, per_sample);
            std::vector<std::string> csv_row{site.name, std::to_string(n), std::to_string(demo_batch[n])};
            for (auto& cell : csv_cells({a0, b0, a1, b1, a2, b2})) csv_row.push_back(cell);
            demo_s.row(csv_row);
            demo_sample_rows.push_back({site.name, std::to_string(n), num(a0, 4), num(b0, 4), num(a1, 4),
                                        num(b1, 4), num(a2, 3), num(b2, 7)});
            bn_sample_mean.add(a1);
            bn_sample_var.add(b1);
            ln_sample_mean.add(a2);
            ln_sample_var.add(b2);
        }
    }
}

// spread_mean.png, spread_var.png, probe_noise.png and probe_noise_log.png.
void BatchNoiseStudy::plot_figures() const {
    auto spread_csv = [&](const std::string& site) { return o.out + "/spread_" + site + ".csv"; };
    auto probe_csv = [&](const std::string& site) { return o.out + "/probe_" + site + ".csv"; };
    Figure fig_mean{"Spread of the batch mean per channel, (mu_B - mu)/sigma (" + std::to_string(batches) +
                        " batches per size)",
                    "batch size B", "std over batches (mean over channels)", true};
    fig_mean.extra = "set logscale x 2";
    fig_mean.series = {
        {spread_csv("input"), "batch_size", "mean_spread", "input pixels, measured"},
        {spread_csv("conv1"), "batch_size", "mean_spread", "conv1 (pre-BN), measured"},
        {spread_csv("input"), "batch_size", "image_level_prediction", "input, from image means", "lines dt 2"},
        {spread_csv("conv1"), "batch_size", "image_level_prediction", "conv1, from image means", "lines dt 2"},
        {spread_csv("input"), "batch_size", "iid_mean_spread", "i.i.d. values: 1/sqrt(B*H*W)", "lines dt 3"}};
    Figure fig_var{"Spread of the batch variance per channel, var_B / sigma^2", "batch size B",
                   "std over batches (mean over channels)", true};
    fig_var.extra = "set logscale x 2";
    fig_var.series = {
        {spread_csv("input"), "batch_size", "var_spread", "input pixels, measured"},
        {spread_csv("conv1"), "batch_size", "var_spread", "conv1 (pre-BN), measured"},
        {spread_csv("input"), "batch_size", "iid_gaussian_var_spread", "i.i.d. Gaussian: sqrt(2/(B*H*W))",
         "lines dt 3"}};
    // (No apostrophes in figure text: plot() puts it in single-quoted gnuplot strings.)
    Figure fig_probe{"The normalised activations of one image across " + std::to_string(probe_batches) +
                         " batches of random companions",
                     "batch size B", "std over batches (rms over the elements of the image)"};
    fig_probe.extra = "set logscale x 2\nset yrange [0:*]";
    fig_probe.series = {
        {probe_csv("input"), "batch_size", "batchnorm_std_rms", "BatchNorm, input"},
        {probe_csv("conv1"), "batch_size", "batchnorm_std_rms", "BatchNorm, conv1"},
        {probe_csv("input"), "batch_size", "first_order_prediction", "first-order prediction, input", "lines dt 2"},
        {probe_csv("conv1"), "batch_size", "first_order_prediction", "first-order prediction, conv1", "lines dt 2"},
        {probe_csv("input"), "batch_size", "layernorm_std_max", "LayerNorm (max), input"},
        {probe_csv("conv1"), "batch_size", "layernorm_std_max", "LayerNorm (max), conv1"},
        {probe_csv("conv1"), "batch_size", "groupnorm1_std_max", "GroupNorm(1,C) (max), conv1"}};
    // The BatchNorm part on log-log axes (the exact zeros of LayerNorm cannot be drawn there).
    Figure fig_probe_log{"BatchNorm only, log-log: the normalised activations of one image across batches",
                         "batch size B", "std over batches (rms over the elements of the image)", true};
    fig_probe_log.extra = "set logscale x 2";
    fig_probe_log.series = {fig_probe.series[0], fig_probe.series[1], fig_probe.series[2], fig_probe.series[3]};
    plot(o.out + "/probe_noise_log.png", fig_probe_log);
    plot(o.out + "/spread_mean.png", fig_mean);
    plot(o.out + "/spread_var.png", fig_var);
    plot(o.out + "/probe_noise.png", fig_probe);
}

// ---------------------------------------------------------------- the summary
TemplateValues BatchNoiseStudy::how_it_was_run(int argc, char** argv, double total_seconds) const {
    return {{"command", command_line(argc, argv)},
            {"machine", threading_info()},
            {"images", std::to_string(N)},
            {"root", root},
            {"which_images", fill_phrase(N < 50000 ? "batch_noise/data_limited" : "batch_noise/data_all")},
            {"network", net.description},
            {"input_where", sites[0].where},
            {"input_channels", std::to_string(sites[0].C)},
            {"conv1_where", sites[1].where},
            {"conv1_channels", std::to_string(sites[1].C)},
            {"seed", std::to_string(o.seed)},
            {"batches", std::to_string(batches)},
            {"probe_batches", std::to_string(probe_batches)},
            {"probe", std::to_string(probe)},
            {"batch_sizes", join(batch_sizes)},
            {"shortcut_mean_err", num(shortcut_mean_err, 2)},
            {"shortcut_var_err", num(shortcut_var_err, 2)},
            {"eps", num(kEps)},
            {"population_seconds", num(population_seconds, 3)},
            {"spread_seconds", num(spread_seconds, 3)},
            {"probe_seconds", num(probe_seconds, 3)},
            {"total_seconds", num(total_seconds, 3)},
            {"values_per_image", std::to_string(sites[0].HW)},
            {"demo_images", std::to_string(demo_images)},
            {"demo_batch", join(demo_batch)},
            {"demo_channels", std::to_string(demo_channels)}};
}

// Per site: how much of the variance is between images, and what an image is worth.
std::string BatchNoiseStudy::population_table() const {
    std::vector<std::vector<std::string>> rows;
    for (const Site& s : sites) {
        std::vector<double> frac, eff;
        for (int64_t c = 0; c < s.C; ++c) {
            frac.push_back(s.between_var[c] / s.pop_var[c]);
            eff.push_back(s.pop_var[c] / s.between_var[c]);
        }
        rows.push_back({s.name, std::to_string(s.C), std::to_string(s.HW), num(average(frac), 3),
                        num(*std::min_element(frac.begin(), frac.end()), 3) + " - " +
                            num(*std::max_element(frac.begin(), frac.end()), 3),
                        num(1 / average(frac), 3),
                        num(*std::min_element(eff.begin(), eff.end()), 3) + " - " +
                            num(*std::max_element(eff.begin(), eff.end()), 3)});
    }
    return md_table({"site", "channels", "values per image and channel", "Var(image mean) / sigma^2 (mean over channels)",
                     "range over channels", "1 / that mean", "independent values per image (range over channels)"},
                    rows);
}

std::string BatchNoiseStudy::spread_tables() const {
    std::string out;
    for (const Site& s : sites) {
        std::vector<std::vector<std::string>> rows;
        for (const SpreadRow& r : spread.at(s.name)) {
            const double m = static_cast<double>(r.B * s.HW);
            rows.push_back({std::to_string(r.B), num(m), num(r.mean_spread, 3), num(1 / std::sqrt(m), 3),
                            num(r.image_level_prediction, 3), num(1 / (r.mean_spread * r.mean_spread), 3),
                            num(1 / (r.mean_spread * r.mean_spread) / r.B, 3), num(r.var_spread, 3),
                            num(std::sqrt(2 / m), 3), num(r.var_ratio_mean, 4)});
        }
        out += fill_template("batch_noise/spread_site",
                             {{"site", s.name},
                              {"channels", std::to_string(s.C)},
                              {"table", md_table({"B", "m = B*H*W", "mean spread", "iid 1/sqrt(m)", "from image means",
                                                  "effective m", "effective m / B", "var spread", "iid sqrt(2/m)",
                                                  "E[var_B] / sigma^2"},
                                                 rows)}});
    }
    return out;
}

std::string BatchNoiseStudy::probe_tables() const {
    std::string out;
    for (const Site& s : sites) {
        std::vector<std::vector<std::string>> rows;
        for (const ProbeRow& r : probe_rows.at(s.name))
            rows.push_back({std::to_string(r.B), num(r.bn_std_rms, 3), num(r.bn_std_max, 3), num(r.bn_prediction, 3),
                            num(r.ln_std_max), num(r.ln_max_diff), num(r.gn_std_max), num(r.gn_max_diff)});
        out += fill_template("batch_noise/probe_site",
                             {{"site", s.name},
                              {"table", md_table({"B", "BatchNorm std (rms)", "BatchNorm std (max)",
                                                  "first-order prediction", "LayerNorm std (max)",
                                                  "LayerNorm: max diff from alone", "GroupNorm(1,C) std (max)",
                                                  "GroupNorm(1,C): max diff from alone"},
                                                 rows)}});
    }
    return out;
}

// The numbers of "What the numbers show": every one computed from the parts.
TemplateValues BatchNoiseStudy::findings() const {
    const std::vector<SpreadRow>& si = spread.at("input");
    const std::vector<SpreadRow>& sc = spread.at("conv1");
    const std::vector<ProbeRow>& pi = probe_rows.at("input");
    const std::vector<ProbeRow>& pc = probe_rows.at("conv1");
    // Least-squares slope of log(spread) against log(B).
    auto loglog_slope = [](const std::vector<SpreadRow>& rows) {
        double sx = 0, sy = 0, sxx = 0, sxy = 0, n = static_cast<double>(rows.size());
        for (const SpreadRow& r : rows) {
            const double x = std::log(static_cast<double>(r.B)), y = std::log(r.mean_spread);
            sx += x, sy += y, sxx += x * x, sxy += x * y;
        }
        return (n * sxy - sx * sy) / (n * sxx - sx * sx);
    };
    double ratio_lo = INFINITY, ratio_hi = 0, prediction_dev = 0;
    std::map<std::string, std::pair<double, double>> per_image;  // site -> range of effective m / B
    for (const Site& site : sites)
        for (const SpreadRow& r : spread.at(site.name)) {
            const double ratio = r.mean_spread * std::sqrt(static_cast<double>(r.B * site.HW));
            ratio_lo = std::min(ratio_lo, ratio);
            ratio_hi = std::max(ratio_hi, ratio);
            prediction_dev = std::max(prediction_dev, std::fabs(r.mean_spread / r.image_level_prediction - 1));
            const double eff = 1 / (r.mean_spread * r.mean_spread) / r.B;
            auto& range = per_image.emplace(site.name, std::make_pair(eff, eff)).first->second;
            range.first = std::min(range.first, eff);
            range.second = std::max(range.second, eff);
        }
    auto range_text = [](std::pair<double, double> r) { return num(r.first, 2) + "-" + num(r.second, 2); };
    // The probe: in units of the normalised activation (whose own spread is about 1).
    size_t mid = 0;
    for (size_t i = 0; i < batch_sizes.size(); ++i)
        if (batch_sizes[i] == 128) mid = i;
    double first_order_dev = 0;
    bool any_large = false;
    for (const auto* rows : {&pi, &pc})
        for (const ProbeRow& r : *rows)
            if (r.B >= 16) {
                any_large = true;
                first_order_dev = std::max(first_order_dev, std::fabs(r.bn_std_rms / r.bn_prediction - 1));
            }
    double alone_diff = 0;
    for (const auto* rows : {&pi, &pc})
        for (const ProbeRow& r : *rows) alone_diff = std::max({alone_diff, r.ln_max_diff, r.gn_max_diff});
    const std::string probe_total = std::to_string(static_cast<long long>(probe_batches * batch_sizes.size()));
    return {
        {"b_first", std::to_string(batch_sizes.front())},
        {"b_last", std::to_string(batch_sizes.back())},
        {"b_mid", std::to_string(batch_sizes[mid])},
        {"input_mean_spread_first", num(si.front().mean_spread, 2)},
        {"input_mean_spread_last", num(si.back().mean_spread, 2)},
        {"conv1_mean_spread_first", num(sc.front().mean_spread, 2)},
        {"conv1_mean_spread_last", num(sc.back().mean_spread, 2)},
        {"input_slope", num(loglog_slope(si), 3)},
        {"conv1_slope", num(loglog_slope(sc), 3)},
        {"iid_ratio_lo", num(ratio_lo, 2)},
        {"iid_ratio_hi", num(ratio_hi, 2)},
        {"input_values_per_image", range_text(per_image["input"])},
        {"conv1_values_per_image", range_text(per_image["conv1"])},
        {"prediction_dev_pct", num(100 * prediction_dev, 2)},
        {"input_var_spread_first", num(si.front().var_spread, 2)},
        {"conv1_var_spread_first", num(sc.front().var_spread, 2)},
        {"input_var_spread_last", num(si.back().var_spread, 2)},
        {"conv1_var_spread_last", num(sc.back().var_spread, 2)},
        {"input_var_ratio_first", num(si.front().var_ratio_mean, 3)},
        {"conv1_var_ratio_first", num(sc.front().var_ratio_mean, 3)},
        {"conv1_probe_first", num(pc.front().bn_std_rms, 2)},
        {"conv1_probe_mid", num(pc[mid].bn_std_rms, 2)},
        {"conv1_probe_last", num(pc.back().bn_std_rms, 2)},
        {"input_probe_first", num(pi.front().bn_std_rms, 2)},
        {"input_probe_mid", num(pi[mid].bn_std_rms, 2)},
        {"input_probe_last", num(pi.back().bn_std_rms, 2)},
        {"first_order", any_large ? fill_phrase("batch_noise/first_order",
                                                {{"first_order_dev_pct", num(100 * first_order_dev, 2)}})
                                  : ""},
        {"alone", alone_diff == 0 ? fill_phrase("batch_noise/alone_identical", {{"probe_total", probe_total}})
                                  : fill_phrase("batch_noise/alone_differs",
                                                {{"probe_total", probe_total}, {"alone_diff", num(alone_diff, 3)}})},
        {"bn_channel_mean", bn_channel_mean.text(2)},
        {"bn_channel_var", bn_channel_var.text(7)},
        {"bn_var_vs_eps_formula", num(bn_var_vs_eps_formula, 2)},
        {"bn_sample_mean", bn_sample_mean.text(2)},
        {"ln_sample_mean", ln_sample_mean.text(2)},
        {"ln_sample_var", ln_sample_var.text(7)},
        {"ln_channel_mean", ln_channel_mean.text(2)},
        {"ln_channel_var", ln_channel_var.text(3)},
    };
}

}  // namespace

int main(int argc, char** argv) {
    BatchNoiseStudy st;
    StudyOptions& o = st.o;
    o.out = "results/studies/batch-noise";
    o.train_limit = 0;  // the whole training set: one conv1 pass, a few minutes on one core
    CLI::App app{"study_batch_noise: noise of BatchNorm's batch statistics, and LayerNorm's independence"};
    add_study_flags(app, o);
    // Nothing is trained here: the training-budget flags of add_study_flags do not apply.
    for (const char* unused : {"--epochs", "--batch-size", "--test-limit"}) app.remove_option(app.get_option(unused));
    app.add_option("--checkpoint", st.checkpoint,
                   "cnn weights (train_cifar checkpoint or saved model); default: a fresh cnn from --seed");
    app.add_option("--batch-sizes", st.batch_sizes, "batch sizes (each at most the training images - 1)")
        ->delimiter(',')
        ->check(flag::whole(2, 50000))
        ->capture_default_str();
    app.add_option("--batches", st.batches, "random batches per batch size for the statistics' spread")
        ->check(flag::whole(2, 10000000))
        ->capture_default_str();
    app.add_option("--probe-batches", st.probe_batches, "random batches per batch size around the probe image")
        ->check(flag::whole(2, 10000000))
        ->capture_default_str();
    app.add_option("--demo-images", st.demo_images, "images in the numeric demo")
        ->check(flag::whole(1, 1000))
        ->capture_default_str();
    app.add_option("--demo-channels", st.demo_channels, "conv1 channels shown in the demo table")
        ->check(flag::whole(1, 64))
        ->capture_default_str();
    app.add_option("--cache-dir", o.cache_dir, "where decoded image folders are cached")->capture_default_str();
    const auto t_start = Clock::now();
    return run_study(app, argc, argv, [&] {
        st.load();
        NoGradGuard no_grad;
        st.measure_population();
        st.measure_spread_of_batch_statistics();
        st.measure_probe_among_companions();
        st.numeric_demo();
        st.plot_figures();
        TemplateValues v = st.how_it_was_run(argc, argv, seconds_since(t_start));
        v.merge(st.findings());
        v["population_table"] = st.population_table();
        v["spread_tables"] = st.spread_tables();
        v["probe_tables"] = st.probe_tables();
        v["demo_channel_table"] = md_table({"site, channel", "mean before", "var before", "mean after BN",
                                            "var after BN", "var/(var+eps)", "mean after LN", "var after LN"},
                                           st.demo_channel_rows);
        v["demo_sample_table"] = md_table({"site", "sample", "mean before", "var before", "mean after BN",
                                           "var after BN", "mean after LN", "var after LN"},
                                          st.demo_sample_rows);
        const std::string md = fill_template("batch_noise/summary", v);
        std::printf("%s", md.c_str());
        write_text(o.out + "/summary.md", md);
        std::printf("wrote %s/summary.md (%.0f s)\n", o.out.c_str(), seconds_since(t_start));
    });
}
