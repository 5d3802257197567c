// study_batch1: normalisation at batch size 1.
//
//     study_batch1 --out results/studies/batch1
//
// Trains the reference cnn with each normalisation (BatchNorm, the gated
// BatchNorm of layers/gated_batchnorm.h, BatchRenorm, GroupNorm, LayerNorm)
// twice on the same images for the same number of epochs: at the default
// batch size (128, lr 0.1) and at batch size 1 (lr 0.1/128: the linear
// scaling rule, so both see the same lr per image), both with SGD momentum
// 0.9 and weight decay 5e-4, shuffled (random class order) with crop+flip.
// Reports each model's test accuracy (eval mode), the drop from batch 128 to
// batch 1, and whether that drop exceeds the threshold (15 percentage points
// by default). For the gated BatchNorm it also reports where each layer's
// gates ended. Writes runs/<norm>-b<batch>.csv, results.csv, gates.csv,
// test_accuracy.png and summary.md into --out.
#include "studies/study.h"
#include "core/ops.h"

using namespace minnow;
using namespace minnow::app;

namespace {

bool is_gate(const std::string& name) {
    return name.size() >= 5 && name.compare(name.size() - 5, 5, ".gate") == 0;
}

// Mean and range of sigmoid(gate) of every gated layer ("features.1.gate" ...).
std::vector<std::vector<std::string>> gate_rows(Module& model, const std::string& run) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& [name, p] : model.named_parameters()) {
        if (!is_gate(name)) continue;
        double sum = 0, lo = 1, hi = 0;
        for (int64_t c = 0; c < p.numel(); ++c) {
            const double g = 1 / (1 + std::exp(-static_cast<double>(p.data()[c])));
            sum += g;
            lo = std::min(lo, g);
            hi = std::max(hi, g);
        }
        rows.push_back({run, name.substr(0, name.size() - 5), num(sum / p.numel(), 4), num(lo, 4), num(hi, 4)});
    }
    return rows;
}

// The gates in a group of their own: lr gate_lr at every batch size and no
// weight decay (it would pull every gate to 1/2).
std::function<std::vector<ParamGroupSpec>(const NamedTensors&)> gates_apart(double gate_lr) {
    return [gate_lr](const NamedTensors& params) {
        NamedTensors gates_only, rest;
        for (const auto& np : params) (is_gate(np.first) ? gates_only : rest).push_back(np);
        std::vector<ParamGroupSpec> groups{ParamGroupSpec(rest)};
        if (!gates_only.empty()) {
            groups.emplace_back(gates_only);
            groups.back().lr = gate_lr;
            groups.back().weight_decay = 0.0;
        }
        return groups;
    };
}

struct Batch1Tables {
    std::string accuracy, gates;  // markdown; gates empty without a gated run
};

// Every norm at the default batch size and at batch 1 (lr scaled linearly):
// runs/<norm>-b<batch>.csv, results.csv (the accuracy drop), gates.csv (where
// the gated BatchNorm's gates ended) and test_accuracy.png.
Batch1Tables compare_batch_sizes(const StudyOptions& o, const StudyData& data, const std::vector<std::string>& norms,
                                 double base_lr, double gate_lr, double threshold) {
    CsvFile results(o.out + "/results.csv", {"norm", "acc_default_batch", "acc_batch1", "drop_points",
                                             "drop_relative_pct", "exceeds_threshold"});
    CsvFile gates(o.out + "/gates.csv", {"run", "layer", "gate_mean", "gate_min", "gate_max"});
    Figure acc("Test accuracy at batch " + std::to_string(o.batch_size) + " and at batch 1", "epoch", "accuracy (%)");
    std::vector<std::vector<std::string>> rows, gate_table;
    double reference_acc = NAN;  // BatchNorm at the default batch: "the default build"
    for (const auto& norm : norms) {
        double acc_at[2] = {NAN, NAN};
        const int64_t batch_sizes[2] = {o.batch_size, 1};
        for (int i = 0; i < 2; ++i) {
            RunSpec spec = study_run(o, norm + " b" + std::to_string(batch_sizes[i]), norm);
            spec.batch_size = batch_sizes[i];
            spec.lr = base_lr * static_cast<double>(batch_sizes[i]) / static_cast<double>(o.batch_size);
            spec.param_groups = gates_apart(gate_lr);
            RunRecord r = train_run(spec, data.train, data.test);
            const std::string base = o.out + "/runs/" + norm + "-b" + std::to_string(spec.batch_size);
            write_epochs_csv(base + ".csv", r);
            if (!r.epochs.empty()) acc.series.push_back({base + ".csv", "epoch", "test_acc", spec.label});
            acc_at[i] = r.diverged() ? NAN : r.final_test_acc();
            for (auto& row : gate_rows(*r.model, spec.label)) {
                gates.row(row);
                gate_table.push_back(row);
            }
        }
        if (norm == "batch") reference_acc = acc_at[0];
        const double drop = acc_at[0] - acc_at[1];
        const bool exceeds = !(drop <= threshold);  // a diverged run (NaN) exceeds it too
        results.row({norm, num(acc_at[0], 4), num(acc_at[1], 4), num(drop, 4), num(100 * drop / acc_at[0], 4),
                     exceeds ? "yes" : "no"});
        rows.push_back({norm, num(acc_at[0], 4), num(acc_at[1], 4), num(drop, 3),
                        std::isnan(reference_acc) ? "-" : num(reference_acc - acc_at[1], 3),
                        exceeds ? "**yes**" : "no"});
    }
    acc.extra = "set xtics 1";
    plot(o.out + "/test_accuracy.png", acc);
    Batch1Tables t;
    t.accuracy = md_table({"norm", "test acc, batch " + std::to_string(o.batch_size) + " (%)", "test acc, batch 1 (%)",
                           "drop (points)", "drop vs BatchNorm at batch " + std::to_string(o.batch_size),
                           "drop > " + num(threshold) + " points"},
                          rows);
    if (!gate_table.empty()) t.gates = md_table({"run", "layer", "mean g", "min g", "max g"}, gate_table);
    return t;
}

}  // namespace

int main(int argc, char** argv) {
    StudyOptions o;
    o.out = "results/studies/batch1";
    o.epochs = 2;
    o.train_limit = 5000;
    std::vector<std::string> norms{"batch", "gated", "renorm", "group", "layer"};
    double base_lr = 0.1, gate_lr = 0.1, threshold = 15;
    CLI::App app{"study_batch1: normalisations trained at batch size 1 and at the default batch size"};
    add_study_flags(app, o);  // --batch-size is the default build's batch size
    add_norms_flag(app, norms);
    app.add_option("--lr", base_lr, "lr at --batch-size; batch size 1 gets lr * 1 / batch-size")
        ->check(flag::real(0, 1e30))
        ->capture_default_str();
    app.add_option("--gate-lr", gate_lr, "lr of the gated BatchNorm's gates, at every batch size (no weight decay)")
        ->check(flag::real(0, 1e30))
        ->capture_default_str();
    app.add_option("--threshold", threshold, "accuracy drop (percentage points) that counts as too much")
        ->check(flag::real(0, 100))
        ->capture_default_str();
    return run_study(app, argc, argv, [&] {
        const StudyData data = start_study(o, "batch 1");
        const Batch1Tables tables = compare_batch_sizes(o, data, norms, base_lr, gate_lr, threshold);
        TemplateValues v = run_values(argc, argv);
        v["budget"] = budget_text(o, data.train->n, data.test->n);
        v["batch_size"] = std::to_string(o.batch_size);
        v["train_images"] = std::to_string(data.train->n);
        v["lr"] = num(base_lr);
        v["lr_batch1"] = num(base_lr / o.batch_size);
        v["gate_lr"] = num(gate_lr);
        v["table"] = tables.accuracy;
        v["gates"] = tables.gates.empty() ? "" : fill_template("batch1/gates", {{"table", tables.gates}});
        write_summary(o.out, fill_template("batch1/summary", v));
    });
}
