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

}  // namespace

int main(int argc, char** argv) {
    StudyOptions o;
    o.out = "results/studies/lr-sweep";
    o.batch_size = 64;
    std::vector<double> lrs{0.01, 0.05, 0.1};
    std::vector<std::string> norms{"batch", "none"};
    CLI::App app{"study_lr_sweep: learning-rate sweep of the cnn with and without BatchNorm"};
    add_study_flags(app, o);
    app.add_option("--lrs", lrs, "learning rates")->delimiter(',')->capture_default_str();
    app.add_option("--norms", norms, "normalisations (kinds of make_norm2d)")->delimiter(',')->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    try {
        const StudyData data = start_study(o, "lr sweep");
        const auto& train_set = data.train;
        const auto& test_set = data.test;

        CsvFile sweep(o.out + "/sweep.csv", {"norm", "lr", "final_test_acc", "best_test_acc", "final_train_loss",
                                             "epochs_done", "diverged_at_step", "reason"});
        std::vector<RunRecord> runs;
        Figure acc{"Test accuracy (batch " + std::to_string(o.batch_size) + ")", "epoch", "accuracy (%)"};
        Figure loss{"Training loss (mean over each epoch)", "epoch", "cross-entropy", true};
        Figure steps{"Training loss per step (running mean over 50 steps)", "step", "cross-entropy", true};
        for (const auto& norm : norms) {
            for (double lr : lrs) {
                RunSpec spec;
                spec.label = norm + " lr=" + num(lr);
                spec.norm = norm;
                spec.lr = lr;
                spec.epochs = o.epochs;
                spec.batch_size = o.batch_size;
                spec.seed = o.seed;
                RunRecord r = train_run(spec, train_set, test_set);
                const std::string base = o.out + "/runs/" + run_name(norm, lr);
                write_epochs_csv(base + ".csv", r);
                write_step_loss_csv(base + "-steps.csv", r);
                double best = 0;
                for (const auto& e : r.epochs) best = std::max(best, e.test_acc);
                sweep.row({norm, num(lr), r.epochs.empty() ? "" : num(r.final_test_acc(), 4), num(best, 4),
                           r.epochs.empty() ? "" : num(r.epochs.back().train_loss, 4),
                           std::to_string(r.epochs.size()), std::to_string(r.diverged_at_step),
                           r.diverged() ? "\"" + r.diverged_reason + "\"" : ""});
                if (!r.epochs.empty()) {
                    acc.series.push_back({base + ".csv", "epoch", "test_acc", spec.label});
                    loss.series.push_back({base + ".csv", "epoch", "train_loss", spec.label});
                }
                steps.series.push_back({base + "-steps.csv", "step", "loss_mean50", spec.label, "lines"});
                r.model.reset();  // the weights are not needed any more
                runs.push_back(std::move(r));
            }
        }
        acc.extra = "set xtics 1";
        loss.extra = "set xtics 1";
        plot(o.out + "/test_accuracy.png", acc);
        plot(o.out + "/train_loss.png", loss);
        plot(o.out + "/step_loss.png", steps);

        // ---- summary.md: what ran, the table, and what the table says
        std::vector<std::vector<std::string>> rows;
        for (const auto& r : runs) {
            std::string acc_per_epoch;
            for (const auto& e : r.epochs) acc_per_epoch += (acc_per_epoch.empty() ? "" : ", ") + num(e.test_acc, 3);
            rows.push_back({r.label, acc_per_epoch.empty() ? "-" : acc_per_epoch,
                            r.epochs.empty() ? "-" : num(r.epochs.back().train_loss, 3),
                            r.diverged() ? "step " + std::to_string(r.diverged_at_step) + ": " + r.diverged_reason
                                         : "no"});
        }
        std::ostringstream md;
        md << "# Learning-rate sweep: cnn with and without BatchNorm\n\n"
           << "Budget: " << budget_text(o, train_set->n, test_set->n)
           << ". Shortened from the 20-epoch recipe (and its lr schedule: the lr is constant here) so that all "
           << runs.size() << " runs fit in a working session; the effect of the learning rate shows in the "
           << "first epochs. SGD momentum 0.9, weight decay 5e-4, crop+flip augmentation.\n\n"
           << "Command: `" << command_line(argc, argv) << "`  \n"
           << "Machine: " << threading_info() << "\n\n"
           << md_table({"run", "test accuracy per epoch (%)", "last train loss", "diverged"}, rows) << "\n"
           << "![test accuracy](test_accuracy.png)\n\n![training loss](train_loss.png)\n\n"
           << "![loss per step](step_loss.png)\n\n## What the runs show\n\n";
        for (const auto& norm : norms) {
            const RunRecord* best = nullptr;
            std::string diverged;
            for (const auto& r : runs) {
                if (r.label.rfind(norm + " ", 0) != 0) continue;
                if (r.diverged()) diverged += (diverged.empty() ? "" : ", ") + r.label.substr(norm.size() + 1);
                if (!r.diverged() && (!best || r.final_test_acc() > best->final_test_acc())) best = &r;
            }
            md << "- **" << norm << "**: ";
            if (best) md << "best final test accuracy " << num(best->final_test_acc(), 4) << "% at " << best->label;
            else md << "every run diverged";
            md << "; diverged: " << (diverged.empty() ? "none" : diverged) << ".\n";
        }
        write_text(o.out + "/summary.md", md.str());
        std::printf("wrote %s/summary.md\n", o.out.c_str());
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "study_lr_sweep: %s\n", e.what());
        return 1;
    }
}
