// evaluate: test accuracy and the confusion matrix of a checkpoint.
//
//     evaluate --checkpoint results/cnn-batch/checkpoint.safetensors
//     evaluate --checkpoint model.safetensors --model cnn --norm none --dump-logits logits.safetensors
//     evaluate --checkpoint results/cnn-batch/checkpoint.safetensors --int8
//
// --int8 evaluates the int8 version of the model instead (layers/int8_model.h:
// BatchNorm folded, activation scales calibrated first on --calibration
// training images, evenly across the classes).
// Reads train_cifar checkpoints, --save files and PyTorch state_dicts written
// as safetensors; --model/--norm are needed only when the file's metadata does
// not say which network it is.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "apps/common.h"
#include "layers/models.h"
#include "layers/norm_factory.h"

using namespace minnow;
using namespace minnow::app;

namespace {

struct Options {
    std::string checkpoint, model, norm, data, dump_logits, cache_dir = default_cache_dir();
    int64_t test_limit = 0, batch_size = 256, calibration = 512;
    int threads = 0;
    bool int8 = false;
    std::string calibration_method = "mse";
};

int run(const Options& o) {
    setup_threads(o.threads);
    if (!o.dump_logits.empty()) require_writable_file(o.dump_logits, "--dump-logits");
    SafetensorsFile f = load_safetensors(o.checkpoint);
    auto from_meta = [&](const std::string& given, const std::string& key) {
        if (!given.empty()) return given;
        auto it = f.metadata.find(key);
        if (it == f.metadata.end())
            throw Error(o.checkpoint + ": its metadata does not say the " + key + "; pass --" + key);
        return it->second;
    };
    const std::string model_name = from_meta(o.model, "model"), norm = from_meta(o.norm, "norm");
    auto model = make_model(model_name, norm);
    model->load_state_dict(model_entries(f), true, o.checkpoint);
    require_batch_fits(*model, false, o.batch_size, 32, "--batch-size");

    const std::string root = find_cifar10(o.data);
    auto test_set = load_split(root, false, o.test_limit, o.cache_dir);
    // Normalised as in training: the file says how, or it is CIFAR's usual.
    const std::vector<float> mean = normalisation_in(f, "mean", o.checkpoint, kCifarMean),
                             std = normalisation_in(f, "std", o.checkpoint, kCifarStd);
    std::shared_ptr<Module> evaluated = model;
    if (o.int8) {
        Int8Options opt;
        opt.calibration = parse_calibration(o.calibration_method);
        auto q = int8_version(model_name, norm, *model, calibration_images(root, o.calibration, o.cache_dir, mean, std),
                              opt);
        std::printf("int8: %s, calibrated (%s) on %lld training images\n", q->extra_repr().c_str(),
                    o.calibration_method.c_str(), static_cast<long long>(o.calibration));
        evaluated = q;
    }
    EvalResult r = evaluate(*evaluated, test_set, o.batch_size, !o.dump_logits.empty(), mean, std);

    std::printf("%s (%s, norm %s%s) on %lld test images of %s\n", o.checkpoint.c_str(), model_name.c_str(),
                norm.c_str(), o.int8 ? ", int8" : "", static_cast<long long>(r.n), root.c_str());
    std::printf("normalised with mean %g,%g,%g and std %g,%g,%g\n", mean[0], mean[1], mean[2], std[0], std[1], std[2]);
    std::printf("test accuracy %.2f%%, mean cross-entropy %.4f\n\n", r.accuracy, r.loss);
    std::printf("confusion matrix (rows: true class, columns: predicted)\n%12s", "");
    const auto& names = test_set->class_names;
    for (size_t j = 0; j < names.size(); ++j) std::printf(" %5.5s", names[j].c_str());
    std::printf("  accuracy\n");
    for (size_t i = 0; i < names.size(); ++i) {
        std::printf("%12s", names[i].c_str());
        int64_t row = 0;
        for (size_t j = 0; j < names.size(); ++j) {
            std::printf(" %5lld", static_cast<long long>(r.confusion[i][j]));
            row += r.confusion[i][j];
        }
        std::printf("  %6.2f%%\n", row ? 100.0 * r.confusion[i][i] / row : 0.0);
    }
    if (!o.dump_logits.empty()) {
        save_safetensors(o.dump_logits, {{"logits", r.logits, DType::F32}, {"labels", r.labels, DType::I64}},
                         {{"checkpoint", o.checkpoint}, {"model", model_name}, {"norm", norm},
                          {"int8", o.int8 ? "calibrated (" + o.calibration_method + ") on " +
                                                std::to_string(o.calibration) + " training images"
                                          : "no"}});
        std::printf("\nwrote %s: logits [%lld, %lld], labels [%lld] in the test set's loading order\n",
                    o.dump_logits.c_str(), static_cast<long long>(r.n),
                    static_cast<long long>(test_set->num_classes()), static_cast<long long>(r.n));
    }
    return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    CLI::App app{"evaluate: test accuracy and confusion matrix of a checkpoint on CIFAR-10"};
    app.add_option("--checkpoint", o.checkpoint, "safetensors file (train_cifar checkpoint, --save file or PyTorch state)")
        ->required();
    app.add_option("--model", o.model, "network, when the file's metadata does not say")
        ->check(CLI::IsMember(model_names()));
    app.add_option("--norm", o.norm, "the model's normalisation, when the file's metadata does not say: " + norm2d_help())
        ->check(CLI::IsMember(norm2d_kinds()));
    app.add_option("--data", o.data, "cifar-10-batches-bin folder or image folders with train/ and test/");
    app.add_option("--test-limit", o.test_limit, "use N test images, evenly across the classes (0: all)")
        ->check(flag::whole(0, int64_t{1000000000}));
    app.add_option("--batch-size", o.batch_size, "evaluation batch size")
        ->check(flag::whole(1, 10000))
        ->capture_default_str();
    app.add_option("--dump-logits", o.dump_logits, "write logits [N,10] (F32) and labels [N] (I64) here");
    app.add_option("--threads", o.threads, "threads (default: MINNOW_NUM_THREADS or every core)")
        ->check(flag::threads());
    auto* int8 = app.add_flag("--int8", o.int8, "evaluate the int8 version of the model (BatchNorm folded, calibrated first)");
    app.add_option("--calibration", o.calibration, "with --int8: training images to calibrate on")
        ->check(flag::whole(1, 50000))
        ->needs(int8)
        ->capture_default_str();
    app.add_option("--calibration-method", o.calibration_method, "with --int8: minmax, percentile (99.99) or mse")
        ->check(CLI::IsMember({"minmax", "percentile", "mse"}))
        ->needs(int8)
        ->capture_default_str();
    app.add_option("--cache-dir", o.cache_dir, "where decoded image folders are cached")->capture_default_str();
    return run_app(app, argc, argv, [&] { return run(o); });
}
