// study_bn_momentum: BatchNorm's running-statistics momentum under shift.
//
//     study_bn_momentum --out results/studies/bn-momentum
//
// Trains the BatchNorm cnn three times, changing only the momentum of the
// running statistics (PyTorch's convention: the weight of the new batch;
// 0.1, 0.01, 0.5 = a decay of 0.9, 0.99, 0.5), and after every epoch:
//   * evaluates it (eval mode, so with the running statistics) on the test
//     set, on a label-shifted test set (classes 0 and 1 swap labels: the
//     images are the same, only what counts as right changes), and on a
//     covariate-shifted one (each pixel p -> 0.5 p + 64: less contrast,
//     brighter, the labels unchanged);
//   * measures what the running statistics did: for every BatchNorm layer,
//     how far running_mean and running_var are from the population values
//     of that layer's input (the mean and variance over --pop-images
//     training images, forwarded in eval mode).
// After training, each model re-estimates its statistics on shifted training
// images (train-mode forwards without gradients, the model's own momentum)
// and is tested on the shifted test set after 0, 1, 2, 4, ... batches: how
// fast each momentum follows a shift of the input distribution.
// Writes into --out: runs/momentum-<m>.csv (per epoch), running_stats.csv,
// adaptation.csv, figures and summary.md.
#include "studies/study.h"
#include "layers/batchnorm.h"

using namespace minnow;
using namespace minnow::app;

namespace {

// The covariate shift: less contrast and brighter, labels unchanged.
ImageSet contrast_shifted(const ImageSet& set) {
    ImageSet s = set;
    for (auto& p : s.pixels) p = static_cast<uint8_t>(std::lround(0.5 * p + 64));
    return s;
}

// The label shift: classes 0 and 1 swap labels.
ImageSet labels_swapped(const ImageSet& set) {
    ImageSet s = set;
    std::vector<int> mapping(set.num_classes());
    for (size_t c = 0; c < mapping.size(); ++c) mapping[c] = static_cast<int>(c);
    std::swap(mapping[0], mapping[1]);
    remap_labels(s, mapping);
    return s;
}

// The BatchNorm layers of a cnn and, for each, the layer whose output is its
// input: in cnn's `features` Sequential a norm at index k follows the conv at k-1.
struct NormSite {
    std::string name;     // "features.1"
    BatchNorm* bn;
    Module* input_layer;  // features.0
};

std::vector<NormSite> norm_sites(Module& model) {
    std::vector<NormSite> sites;
    auto modules = model.named_modules();
    std::map<std::string, Module*> by_name;
    for (auto& [name, m] : modules) by_name[name] = m;
    for (auto& [name, m] : modules) {
        auto* bn = dynamic_cast<BatchNorm*>(m);
        if (!bn) continue;
        const auto dot = name.rfind('.');
        const std::string prev = name.substr(0, dot + 1) + std::to_string(std::stoi(name.substr(dot + 1)) - 1);
        if (!by_name.count(prev)) throw Error("study_bn_momentum: no layer " + prev + " before " + name);
        sites.push_back({name, bn, by_name[prev]});
    }
    return sites;
}

// How far the running statistics are from the population statistics of each
// norm layer's input, averaged over channels:
//   mean_err = |running_mean - mu| / sigma,   var_err = |running_var / sigma^2 - 1|.
struct StatError {
    std::string layer;
    double mean_err = 0, var_err = 0;
};

std::vector<StatError> running_stat_errors(Module& model, std::shared_ptr<const ImageSet> pop_set) {
    auto sites = norm_sites(model);
    const size_t L = sites.size();
    std::vector<std::vector<double>> sum(L), sumsq(L);
    std::vector<double> count(L, 0);
    for (size_t l = 0; l < L; ++l) {
        sum[l].assign(sites[l].bn->num_features(), 0);
        sumsq[l].assign(sites[l].bn->num_features(), 0);
        sites[l].input_layer->register_forward_hook([&, l](Module&, const Tensor& y) {
            const int64_t N = y.size(0), C = y.size(1), HW = y.numel() / (N * C);
            for (int64_t n = 0; n < N; ++n)
                for (int64_t c = 0; c < C; ++c) {
                    const float* p = y.data() + (n * C + c) * HW;
                    double s = 0, q = 0;
                    for (int64_t i = 0; i < HW; ++i) {
                        s += p[i];
                        q += static_cast<double>(p[i]) * p[i];
                    }
                    sum[l][c] += s;
                    sumsq[l][c] += q;
                }
            count[l] += static_cast<double>(N * HW);
        });
    }
    evaluate(model, pop_set, 256);
    std::vector<StatError> out;
    for (size_t l = 0; l < L; ++l) {
        sites[l].input_layer->clear_forward_hooks();
        StatError e{sites[l].name};
        const int64_t C = sites[l].bn->num_features();
        for (int64_t c = 0; c < C; ++c) {
            const double mu = sum[l][c] / count[l];
            const double var = std::max(sumsq[l][c] / count[l] - mu * mu, 1e-12);
            e.mean_err += std::abs(sites[l].bn->running_mean.data()[c] - mu) / std::sqrt(var) / C;
            e.var_err += std::abs(sites[l].bn->running_var.data()[c] / var - 1) / C;
        }
        out.push_back(e);
    }
    return out;
}

// Train-mode forwards (no gradients) over `batches` batches of `set`: the
// running statistics move towards the set's, at the layers' own momentum.
void reestimate_statistics(Module& model, std::shared_ptr<const ImageSet> set, int64_t batches,
                           int64_t batch_size, uint64_t seed) {
    LoaderOptions lo = test_loader_options(batch_size);
    lo.shuffle = true;
    lo.seed = seed;
    if (set->n == 0) throw Error("study_bn_momentum: no images to re-estimate the statistics on");
    DataLoader loader(set, lo);
    model.train();
    NoGradGuard ng;
    Batch b;
    int64_t done = 0;
    for (int64_t epoch = 0; done < batches; ++epoch) {  // as many passes over the set as it takes
        loader.start_epoch(epoch);
        while (done < batches && loader.next(b)) {
            model(b.images);
            ++done;
        }
    }
    model.eval();
}

// The test sets of the study and the images its statistics are measured on.
struct ShiftedSets {
    std::shared_ptr<const ImageSet> swapped_test, shifted_test;  // labels 0<->1; contrast-shifted
    std::shared_ptr<const ImageSet> pop, shifted_train;          // --pop-images training images, and shifted
};

ShiftedSets make_shifted_sets(const StudyOptions& o, const StudyData& data, int64_t pop_images) {
    ShiftedSets s;
    s.swapped_test = std::make_shared<const ImageSet>(labels_swapped(*data.test));
    s.shifted_test = std::make_shared<const ImageSet>(contrast_shifted(*data.test));
    s.pop = load_split(data.root, true, pop_images, o.cache_dir);
    // Adaptation uses shifted TRAINING images, disjoint from the test set.
    s.shifted_train = std::make_shared<const ImageSet>(contrast_shifted(*s.pop));
    return s;
}

std::string run_base(const StudyOptions& o, double m) { return o.out + "/runs/momentum-" + num(m); }

// Trains the cnn with BatchNorm momentum m, and after every epoch tests it on
// the clean, label-swapped and contrast-shifted test sets and measures its
// running statistics' errors (runs/momentum-<m>.csv, rows of running_stats.csv).
// Returns the run (with its model) and its row of the accuracy table.
RunRecord train_with_momentum(const StudyOptions& o, const StudyData& data, const ShiftedSets& sets, double m,
                              CsvFile& stats, std::vector<std::string>& accuracy_row) {
    const std::string tag = num(m);
    // Per epoch: the accuracies and the stat errors of the first and last norm.
    CsvFile per_epoch(run_base(o, m) + ".csv", {"epoch", "train_loss", "test_acc", "swapped_test_acc",
                                                "shifted_test_acc", "first_mean_err", "first_var_err",
                                                "last_mean_err", "last_var_err"});
    RunSpec spec = study_run(o, "momentum " + tag, "batch");
    spec.prepare = [m](Module& model) {
        for (auto& [name, mod] : model.named_modules())
            if (auto* bn = dynamic_cast<BatchNorm*>(mod)) bn->set_momentum(static_cast<float>(m));
    };
    double last_swapped = 0, last_shifted = 0;
    RunRecord r = train_run(spec, data.train, data.test, [&](const EpochRecord& e, Module& model) {
        last_swapped = evaluate(model, sets.swapped_test, 256).accuracy;
        last_shifted = evaluate(model, sets.shifted_test, 256).accuracy;
        auto errs = running_stat_errors(model, sets.pop);
        for (const auto& se : errs)
            stats.row({tag, std::to_string(e.epoch), se.layer, num(se.mean_err), num(se.var_err)});
        per_epoch.row({std::to_string(e.epoch), num(e.train_loss), num(e.test_acc), num(last_swapped),
                       num(last_shifted), num(errs.front().mean_err), num(errs.front().var_err),
                       num(errs.back().mean_err), num(errs.back().var_err)});
    });
    accuracy_row = {tag, num(1 - m), r.diverged() ? "diverged" : num(r.final_test_acc(), 4), num(last_swapped, 4),
                    num(last_shifted, 4)};
    return r;
}

const std::vector<int64_t> kAdaptSteps{0, 1, 2, 4, 8, 16, 32, 64};

// Adaptation to the shift, from the trained state each time: re-estimates the
// statistics on k batches of shifted training images for each k of
// kAdaptSteps (runs/momentum-<m>-adaptation.csv, rows of adaptation.csv).
// Returns the row of the adaptation table.
std::vector<std::string> adapt_to_shift(const StudyOptions& o, const StudyData& data, const ShiftedSets& sets,
                                        double m, Module& model, CsvFile& adapt) {
    const std::string tag = num(m);
    auto trained = model.state_dict();  // aliases the live tensors, as in PyTorch: copy
    for (auto& entry : trained) entry.tensor = entry.tensor.clone();
    CsvFile curve(run_base(o, m) + "-adaptation.csv", {"batches", "shifted_test_acc"});
    std::vector<std::string> row{tag};
    for (int64_t k : kAdaptSteps) {
        model.load_state_dict(trained);
        reestimate_statistics(model, sets.shifted_train, k, 128, o.seed);
        const double a = evaluate(model, sets.shifted_test, 256).accuracy;
        const double clean = evaluate(model, data.test, 256).accuracy;
        adapt.row({tag, std::to_string(k), num(a), num(clean)});
        curve.row({std::to_string(k), num(a)});
        row.push_back(num(a, 3));
    }
    return row;
}

// The five figures, from the runs' CSVs.
void plot_momentum_figures(const StudyOptions& o, const std::vector<double>& momenta) {
    Figure acc("Test accuracy (eval mode: running statistics)", "epoch", "accuracy (%)");
    Figure shifted("Accuracy on the contrast-shifted test set", "epoch", "accuracy (%)");
    Figure err_first("Running mean error at the first BatchNorm (features.1)", "epoch",
                     "mean over channels of |running mean - population mean| / population std", true);
    Figure err_last("Running variance error at the last BatchNorm (features.15)", "epoch",
                    "mean over channels of |running var / population var - 1|", true);
    Figure adapt_fig("Re-estimating the statistics on shifted images", "batches of 128 shifted training images",
                     "accuracy on the shifted test set (%)");
    for (double m : momenta) {
        const std::string base = run_base(o, m), label = "momentum " + num(m);
        acc.series.push_back({base + ".csv", "epoch", "test_acc", label});
        shifted.series.push_back({base + ".csv", "epoch", "shifted_test_acc", label});
        err_first.series.push_back({base + ".csv", "epoch", "first_mean_err", label});
        err_last.series.push_back({base + ".csv", "epoch", "last_var_err", label});
        adapt_fig.series.push_back({base + "-adaptation.csv", "batches", "shifted_test_acc", label});
    }
    acc.extra = shifted.extra = err_first.extra = err_last.extra = "set xtics 1";
    adapt_fig.extra = "set logscale x 2\nset xrange [0.7:*]";  // batches = 0 is in the table, not on a log axis
    plot(o.out + "/test_accuracy.png", acc);
    plot(o.out + "/shifted_accuracy.png", shifted);
    plot(o.out + "/running_mean_error.png", err_first);
    plot(o.out + "/running_var_error.png", err_last);
    plot(o.out + "/adaptation.png", adapt_fig);
}

}  // namespace

int main(int argc, char** argv) {
    StudyOptions o;
    o.out = "results/studies/bn-momentum";
    std::vector<double> momenta{0.1, 0.01, 0.5};
    int64_t pop_images = 2000;
    CLI::App app{"study_bn_momentum: BatchNorm's running-statistics momentum under shift"};
    add_study_flags(app, o);
    app.add_option("--momenta", momenta, "BatchNorm momenta (weight of the new batch)")
        ->delimiter(',')
        ->check(flag::real(0, 1))
        ->capture_default_str();
    app.add_option("--pop-images", pop_images, "training images for the population statistics (0: all)")
        ->check(flag::whole(0, int64_t{1000000000}))
        ->capture_default_str();
    return run_study(app, argc, argv, [&] {
        const StudyData data = start_study(o, "bn momentum");
        const ShiftedSets sets = make_shifted_sets(o, data, pop_images);
        CsvFile stats(o.out + "/running_stats.csv", {"momentum", "epoch", "layer", "mean_err", "var_err"});
        CsvFile adapt(o.out + "/adaptation.csv", {"momentum", "batches", "shifted_test_acc", "clean_test_acc"});
        std::vector<std::vector<std::string>> rows, adapt_rows;
        for (double m : momenta) {
            rows.emplace_back();
            RunRecord r = train_with_momentum(o, data, sets, m, stats, rows.back());
            adapt_rows.push_back(adapt_to_shift(o, data, sets, m, *r.model, adapt));
        }
        plot_momentum_figures(o, momenta);

        std::vector<std::string> adapt_header{"momentum"};
        for (int64_t k : kAdaptSteps) adapt_header.push_back(std::to_string(k) + " batches");
        TemplateValues v = run_values(argc, argv);
        v["budget"] = budget_text(o, data.train->n, data.test->n);
        v["pop_images"] = std::to_string(sets.pop->n);
        v["accuracy_table"] = md_table({"momentum", "decay", "test acc (%)", "labels 0<->1 swapped (%)",
                                        "contrast-shifted (%)"},
                                       rows);
        v["adaptation_table"] = md_table(adapt_header, adapt_rows);
        write_summary(o.out, fill_template("bn_momentum/summary", v));
    });
}
