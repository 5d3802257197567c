// study_init_scale: how much the initial weight scale matters, with and
// without BatchNorm.
//
//     study_init_scale --out results/studies/init-scale      # x0.1, x1, x10 x {batch, none}
//
// Initialises the reference cnn as usual (PyTorch's default init), then
// multiplies every conv and linear weight (every parameter of rank >= 2) by
// the scale, and trains it with the recipe's SGD (lr 0.1, momentum 0.9,
// weight decay 5e-4, constant lr here). A convolution followed by BatchNorm
// is invariant to the scale of its weights in the forward pass, so with
// BatchNorm only the classifier's scale changes the output; without it, each
// of the five convs multiplies the activations by the scale (x10 -> 1e5 at
// the logits, x0.1 -> 1e-5). Records the first loss, how many steps the
// running mean of the loss took to fall below --loss-target, the per-epoch
// curves and divergence. Writes runs/<norm>-x<scale>.csv (epochs) and
// -steps.csv (every step), results.csv, figures and summary.md into --out.
#include "studies/study.h"

using namespace minnow;
using namespace minnow::app;

int main(int argc, char** argv) {
    StudyOptions o;
    o.out = "results/studies/init-scale";
    std::vector<double> scales{0.1, 1, 10};
    std::vector<std::string> norms{"batch", "none"};
    double loss_target = 2.0;
    CLI::App app{"study_init_scale: initial weight scale with and without BatchNorm"};
    add_study_flags(app, o);
    app.add_option("--scales", scales, "factors applied to the initial conv and linear weights")
        ->delimiter(',')
        ->capture_default_str();
    app.add_option("--norms", norms, "normalisations (kinds of make_norm2d)")->delimiter(',')->capture_default_str();
    app.add_option("--loss-target", loss_target, "training speed: steps until the 50-step mean loss is below this")
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    try {
        const StudyData data = start_study(o, "init scale");
        const auto& train_set = data.train;
        const auto& test_set = data.test;

        CsvFile results(o.out + "/results.csv", {"norm", "scale", "first_loss", "steps_to_target", "final_test_acc",
                                                 "final_train_loss", "diverged_at_step"});
        Figure acc("Test accuracy by initial weight scale", "epoch", "accuracy (%)");
        Figure steps("Training loss per step (running mean over 50 steps)", "step", "cross-entropy", true);
        std::vector<std::vector<std::string>> rows;
        for (const auto& norm : norms) {
            for (double scale : scales) {
                RunSpec spec;
                spec.label = norm + " x" + num(scale);
                spec.norm = norm;
                spec.epochs = o.epochs;
                spec.batch_size = o.batch_size;
                spec.seed = o.seed;
                spec.prepare = [scale](Module& model) {
                    NoGradGuard ng;
                    for (auto& [name, p] : model.named_parameters())
                        if (p.dim() >= 2) mul_(p, static_cast<float>(scale));
                };
                RunRecord r = train_run(spec, train_set, test_set);
                const std::string base = o.out + "/runs/" + norm + "-x" + num(scale);
                write_epochs_csv(base + ".csv", r);
                write_step_loss_csv(base + "-steps.csv", r);
                if (!r.epochs.empty()) acc.series.push_back({base + ".csv", "epoch", "test_acc", spec.label});
                steps.series.push_back({base + "-steps.csv", "step", "loss_mean50", spec.label, "lines"});

                // Training speed: the first step whose 50-step running mean is below the target.
                int64_t to_target = 0;
                double sum = 0;
                for (size_t i = 0; i < r.step_loss.size() && !to_target; ++i) {
                    sum += r.step_loss[i];
                    if (i >= 50) sum -= r.step_loss[i - 50];
                    if (i >= 49 && sum / 50 < loss_target) to_target = static_cast<int64_t>(i) + 1;
                }
                const double first = r.step_loss.empty() ? NAN : r.step_loss.front();
                const std::string final_acc = r.epochs.empty() ? "-" : num(r.final_test_acc(), 4);
                const std::string final_loss = r.epochs.empty() ? "-" : num(r.epochs.back().train_loss, 4);
                results.row({norm, num(scale), num(first), std::to_string(to_target), final_acc, final_loss,
                             std::to_string(r.diverged_at_step)});
                std::string per_epoch;
                for (const auto& e : r.epochs) per_epoch += (per_epoch.empty() ? "" : ", ") + num(e.test_acc, 3);
                rows.push_back({spec.label, num(first, 4), to_target ? std::to_string(to_target) : "not reached",
                                per_epoch.empty() ? "-" : per_epoch,
                                r.diverged() ? "step " + std::to_string(r.diverged_at_step) + ": " + r.diverged_reason
                                             : "no"});
            }
        }
        acc.extra = "set xtics 1";
        // A diverging run climbs to 1e30 and would flatten every other curve:
        // the axis stops at 10 (ln 10 = 2.3 is chance), the run leaves the top.
        steps.extra = "set yrange [1:10]";
        plot(o.out + "/test_accuracy.png", acc);
        plot(o.out + "/step_loss.png", steps);

        std::ostringstream md;
        md << "# Initial weight scale, with and without BatchNorm\n\n"
           << "Every conv and linear weight of the default initialisation multiplied by the scale before "
              "training. Budget: "
           << budget_text(o, train_set->n, test_set->n)
           << ". Shortened from the 20-epoch recipe (constant lr 0.1, SGD momentum 0.9, weight decay 5e-4, "
              "crop+flip): the scale matters most at the start. Training speed = the first step at which "
              "the mean loss of the last 50 steps is below "
           << num(loss_target) << " (ln 10 = 2.30 is chance).\n\n"
           << "Command: `" << command_line(argc, argv) << "`  \nMachine: " << threading_info() << "\n\n"
           << md_table({"run", "first loss", "steps to loss < " + num(loss_target), "test accuracy per epoch (%)",
                        "diverged"},
                       rows)
           << "\n![test accuracy](test_accuracy.png)\n\n![loss per step](step_loss.png)\n";
        write_text(o.out + "/summary.md", md.str());
        std::printf("wrote %s/summary.md\n", o.out.c_str());
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "study_init_scale: %s\n", e.what());
        return 1;
    }
}
