// study_lr_sweep: the learning-rate sweep of the BatchNorm studies.
//
//     study_lr_sweep --out results/studies/lr-sweep          # lr 0.01 0.05 0.1 x {batch, none}
//
// Trains the reference cnn with and without BatchNorm at each learning rate
// (batch 64, SGD momentum 0.9, weight decay 5e-4, constant lr) and records
// the loss of every step, the per-epoch curves and where a run diverged. A
// run whose loss or gradient goes non-finite stops there and the sweep goes
// on: divergence is a result. Writes into --out:
//   runs/<norm>-lr<lr>.csv         per-epoch metrics of each run
//   runs/<norm>-lr<lr>-steps.csv   every step's loss and its 50-step running mean
//   sweep.csv                      one row per run: final/best accuracy, divergence
//   test_accuracy.png, train_loss.png, step_loss.png, summary.md
#include "studies/study.h"

using namespace minnow;
using namespace minnow::app;

namespace {

std::string run_name(const std::string& norm, double lr) { return norm + "-lr" + num(lr); }

// The sweep: every norm at every lr, each run's CSVs under runs/, one row
// per run in sweep.csv. The runs come back without their models.
std::vector<RunRecord> sweep_learning_rates(const StudyOptions& o, const StudyData& data,
                                            const std::vector<std::string>& norms, const std::vector<double>& lrs) {
    CsvFile sweep(o.out + "/sweep.csv", {"norm", "lr", "final_test_acc", "best_test_acc", "final_train_loss",
                                         "epochs_done", "diverged_at_step", "reason"});
    std::vector<RunRecord> runs;
    for (const auto& norm : norms) {
        for (double lr : lrs) {
            RunSpec spec = study_run(o, norm + " lr=" + num(lr), norm);
            spec.lr = lr;
            RunRecord r = train_run(spec, data.train, data.test);
            const std::string base = o.out + "/runs/" + run_name(norm, lr);
            write_epochs_csv(base + ".csv", r);
            write_step_loss_csv(base + "-steps.csv", r);
            double best = 0;
            for (const auto& e : r.epochs) best = std::max(best, e.test_acc);
            sweep.row({norm, num(lr), r.epochs.empty() ? "" : num(r.final_test_acc(), 4), num(best, 4),
                       r.epochs.empty() ? "" : num(r.epochs.back().train_loss, 4), std::to_string(r.epochs.size()),
                       std::to_string(r.diverged_at_step), r.diverged() ? "\"" + r.diverged_reason + "\"" : ""});
            r.model.reset();  // the weights are not needed any more
            runs.push_back(std::move(r));
        }
    }
    return runs;
}

// test_accuracy.png, train_loss.png (per epoch) and step_loss.png (per step) of every run.
void plot_sweep(const StudyOptions& o, const std::vector<std::string>& norms, const std::vector<double>& lrs,
                const std::vector<RunRecord>& runs) {
    Figure acc{"Test accuracy (batch " + std::to_string(o.batch_size) + ")", "epoch", "accuracy (%)"};
    Figure loss{"Training loss (mean over each epoch)", "epoch", "cross-entropy", true};
    Figure steps{"Training loss per step (running mean over 50 steps)", "step", "cross-entropy", true};
    size_t i = 0;
    for (const auto& norm : norms) {
        for (double lr : lrs) {
            const RunRecord& r = runs[i++];
            const std::string base = o.out + "/runs/" + run_name(norm, lr);
            if (!r.epochs.empty()) {
                acc.series.push_back({base + ".csv", "epoch", "test_acc", r.label});
                loss.series.push_back({base + ".csv", "epoch", "train_loss", r.label});
            }
            steps.series.push_back({base + "-steps.csv", "step", "loss_mean50", r.label, "lines"});
        }
    }
    acc.extra = "set xtics 1";
    loss.extra = "set xtics 1";
    plot(o.out + "/test_accuracy.png", acc);
    plot(o.out + "/train_loss.png", loss);
    plot(o.out + "/step_loss.png", steps);
}

// The summary's table: per run, its test accuracy per epoch, last training loss, divergence.
std::string sweep_table(const std::vector<RunRecord>& runs) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& r : runs)
        rows.push_back({r.label, accuracy_per_epoch(r), r.epochs.empty() ? "-" : num(r.epochs.back().train_loss, 3),
                        divergence_cell(r)});
    return md_table({"run", "test accuracy per epoch (%)", "last train loss", "diverged"}, rows);
}

// Per norm: the best final accuracy over the lrs that did not diverge, and which lrs diverged.
std::string best_lr_per_norm(const std::vector<std::string>& norms, const std::vector<RunRecord>& runs) {
    std::string lines;
    for (const auto& norm : norms) {
        const RunRecord* best = nullptr;
        std::string diverged;
        for (const auto& r : runs) {
            if (r.label.rfind(norm + " ", 0) != 0) continue;
            if (r.diverged()) diverged += (diverged.empty() ? "" : ", ") + r.label.substr(norm.size() + 1);
            if (!r.diverged() && (!best || r.final_test_acc() > best->final_test_acc())) best = &r;
        }
        lines += fill_template(
            "lr_sweep/norm",
            {{"norm", norm},
             {"result", best ? fill_phrase("lr_sweep/best", {{"accuracy", num(best->final_test_acc(), 4)},
                                                             {"run", best->label}})
                             : fill_phrase("lr_sweep/all_diverged")},
             {"diverged", diverged.empty() ? fill_phrase("lr_sweep/none_diverged") : diverged}});
    }
    if (!lines.empty()) lines.pop_back();  // the template ends the line
    return lines;
}

}  // namespace

int main(int argc, char** argv) {
    StudyOptions o;
    o.out = "results/studies/lr-sweep";
    o.batch_size = 64;
    std::vector<double> lrs{0.01, 0.05, 0.1};
    std::vector<std::string> norms{"batch", "none"};
    CLI::App app{"study_lr_sweep: learning-rate sweep of the cnn with and without BatchNorm"};
    add_study_flags(app, o);
    app.add_option("--lrs", lrs, "learning rates")->delimiter(',')->check(flag::real(0, 1e30))->capture_default_str();
    add_norms_flag(app, norms);
    return run_study(app, argc, argv, [&] {
        const StudyData data = start_study(o, "lr sweep");
        const std::vector<RunRecord> runs = sweep_learning_rates(o, data, norms, lrs);
        plot_sweep(o, norms, lrs, runs);
        TemplateValues v = run_values(argc, argv);
        v["budget"] = budget_text(o, data.train->n, data.test->n);
        v["runs"] = std::to_string(runs.size());
        v["table"] = sweep_table(runs);
        v["findings"] = best_lr_per_norm(norms, runs);
        write_summary(o.out, fill_template("lr_sweep/summary", v));
    });
}
