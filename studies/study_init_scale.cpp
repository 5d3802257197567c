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

namespace {

// Training speed: the first step whose 50-step running mean of the loss is
// below `target` (0: never).
int64_t steps_to_loss(const std::vector<float>& step_loss, double target) {
    double sum = 0;
    for (size_t i = 0; i < step_loss.size(); ++i) {
        sum += step_loss[i];
        if (i >= 50) sum -= step_loss[i - 50];
        if (i >= 49 && sum / 50 < target) return static_cast<int64_t>(i) + 1;
    }
    return 0;
}

// Every norm at every initial scale: each run's CSVs under runs/, a row in
// results.csv, figures, and the summary's table (returned).
std::string sweep_initial_scales(const StudyOptions& o, const StudyData& data, const std::vector<std::string>& norms,
                                 const std::vector<double>& scales, double loss_target) {
    CsvFile results(o.out + "/results.csv", {"norm", "scale", "first_loss", "steps_to_target", "final_test_acc",
                                             "final_train_loss", "diverged_at_step"});
    Figure acc("Test accuracy by initial weight scale", "epoch", "accuracy (%)");
    Figure steps("Training loss per step (running mean over 50 steps)", "step", "cross-entropy", true);
    std::vector<std::vector<std::string>> rows;
    for (const auto& norm : norms) {
        for (double scale : scales) {
            RunSpec spec = study_run(o, norm + " x" + num(scale), norm);
            spec.prepare = [scale](Module& model) {
                NoGradGuard ng;
                for (auto& [name, p] : model.named_parameters())
                    if (p.dim() >= 2) mul_(p, static_cast<float>(scale));
            };
            RunRecord r = train_run(spec, data.train, data.test);
            const std::string base = o.out + "/runs/" + norm + "-x" + num(scale);
            write_epochs_csv(base + ".csv", r);
            write_step_loss_csv(base + "-steps.csv", r);
            if (!r.epochs.empty()) acc.series.push_back({base + ".csv", "epoch", "test_acc", spec.label});
            steps.series.push_back({base + "-steps.csv", "step", "loss_mean50", spec.label, "lines"});

            const int64_t to_target = steps_to_loss(r.step_loss, loss_target);
            const double first = r.step_loss.empty() ? NAN : r.step_loss.front();
            const std::string final_acc = r.epochs.empty() ? "-" : num(r.final_test_acc(), 4);
            const std::string final_loss = r.epochs.empty() ? "-" : num(r.epochs.back().train_loss, 4);
            results.row({norm, num(scale), num(first), std::to_string(to_target), final_acc, final_loss,
                         std::to_string(r.diverged_at_step)});
            rows.push_back({spec.label, num(first, 4),
                            to_target ? std::to_string(to_target) : fill_phrase("init_scale/not_reached"),
                            accuracy_per_epoch(r), divergence_cell(r)});
        }
    }
    acc.extra = "set xtics 1";
    // A diverging run climbs to 1e30 and would flatten every other curve:
    // the axis stops at 10 (ln 10 = 2.3 is chance), the run leaves the top.
    steps.extra = "set yrange [1:10]";
    plot(o.out + "/test_accuracy.png", acc);
    plot(o.out + "/step_loss.png", steps);
    return md_table({"run", "first loss", "steps to loss < " + num(loss_target), "test accuracy per epoch (%)",
                     "diverged"},
                    rows);
}

}  // namespace

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
        ->check(flag::real(0, 1e30, /*open_lo=*/true))
        ->capture_default_str();
    add_norms_flag(app, norms);
    app.add_option("--loss-target", loss_target, "training speed: steps until the 50-step mean loss is below this")
        ->check(flag::real(0, 1e30, /*open_lo=*/true))
        ->capture_default_str();
    return run_study(app, argc, argv, [&] {
        const StudyData data = start_study(o, "init scale");
        TemplateValues v = run_values(argc, argv);
        v["table"] = sweep_initial_scales(o, data, norms, scales, loss_target);
        v["budget"] = budget_text(o, data.train->n, data.test->n);
        v["loss_target"] = num(loss_target);
        write_summary(o.out, fill_template("init_scale/summary", v));
    });
}
