// bench: how fast minnow trains and evaluates the reference networks.
//
//     bench                                   every configuration, a table
//     bench --model cnn --norm batch --batch-size 128 --threads 2 --json
//     bench --model cnn --norm batch --mode eval --int8 --image-size 128 --batch-size 1 --json
//
// A training step is what train_cifar does: forward, cross-entropy, backward,
// SGD with momentum and weight decay. Reported: images/second and the median
// and p90 time of a step, achieved GFLOP/s (the FLOP count of
// ../shared/reference/models.py's conv_flops: 2 x multiply-adds of convs and
// linears; a training step counts 3x the forward), peak resident memory, and
// with --layers each layer's forward and backward time. Without selection
// flags each configuration runs in its own process, so peak memory is its own.
// bench/compare.sh runs PyTorch on the same shapes, alternating, for ratios.
// --int8 (eval only) times the int8 version (layers/int8_model.h),
// calibrated on random images: the time does not depend on the scales.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

#include "apps/common.h"
#include "core/random.h"
#include "kernels/cpu.h"
#include "layers/conv2d.h"
#include "layers/linear.h"
#include "layers/norm_factory.h"
#include "optim/sgd.h"

using namespace minnow;
using namespace minnow::app;
using Clock = std::chrono::steady_clock;

namespace {

struct Config {
    std::string model = "cnn", norm = "batch", mode = "train";
    int64_t batch_size = 128, image_size = 32;
    int threads = 0, warmup = 3, steps = 10;
    bool int8 = false;
    bool layers = false;
};

double peak_rss_mb() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss / 1024.0;  // ru_maxrss is in KiB on Linux
}

// FLOPs of one forward pass of one image, counted the way models.py's conv_flops does.
double forward_flops(Module& model, int64_t image_size) {
    double flops = 0;
    Module::set_forward_timer([&](Module& m, const Tensor& y, double) {
        if (auto* c = dynamic_cast<Conv2d*>(&m))
            flops += 2.0 * y.numel() * c->in_channels * c->kernel_size * c->kernel_size;
        else if (auto* l = dynamic_cast<Linear*>(&m))
            flops += 2.0 * l->in_features * l->out_features * y.size(0);
    });
    {
        NoGradGuard ng;
        model(Tensor::zeros({1, 3, image_size, image_size}));
    }
    Module::set_forward_timer(nullptr);
    return flops;
}

nlohmann::json run_config(const Config& c) {
    manual_seed(0);
    auto model = make_model(c.model, c.norm);
    require_batch_fits(*model, c.mode == "train", c.batch_size, c.image_size, "--batch-size");
    const double flops = forward_flops(*model, c.image_size);
    Tensor x = Tensor::normal({c.batch_size, 3, c.image_size, c.image_size}, 0.f, 1.f);
    Tensor y = Tensor::empty({c.batch_size});
    for (int64_t i = 0; i < c.batch_size; ++i) y.data()[i] = static_cast<float>(i % 10);
    SGDOptions so(0.01);
    so.momentum = 0.9;
    so.weight_decay = 5e-4;
    SGD opt(model->named_parameters(), so);
    const bool train = c.mode == "train";
    model->train(train);
    std::shared_ptr<Module> evaluated = model;
    if (c.int8) evaluated = int8_version(c.model, c.norm, *model, Tensor::normal({64, 3, 32, 32}, 0.f, 1.f));
    auto step = [&] {
        if (train) {
            opt.zero_grad();
            cross_entropy((*model)(x), y).backward();
            opt.step();
        } else {
            NoGradGuard ng;
            (*evaluated)(x);
        }
    };
    for (int i = 0; i < c.warmup; ++i) step();
    std::vector<double> times;
    for (int i = 0; i < c.steps; ++i) {
        const auto t0 = Clock::now();
        step();
        times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    const double med = times[times.size() / 2];
    const double p90 = times[std::min(times.size() - 1, static_cast<size_t>(0.9 * times.size()))];
    nlohmann::json j{{"impl", "minnow"},
                     {"model", c.model},
                     {"norm", c.norm},
                     {"mode", c.mode},
                     {"batch_size", c.batch_size},
                     {"image_size", c.image_size},
                     {"threads", get_num_threads()},
                     {"isa", isa_name(active_isa())},
                     {"kernels", kernels_info()},
                     {"int8", c.int8},
                     {"img_per_s", c.batch_size / med},
                     {"ms_per_step_median", med * 1e3},
                     {"ms_per_step_p90", p90 * 1e3},
                     {"gflops", flops * (train ? 3 : 1) * c.batch_size / med / 1e9},
                     {"peak_rss_mb", peak_rss_mb()}};

    if (c.int8) j["int8_kernel"] = int8::kernel_name(std::static_pointer_cast<Int8Model>(evaluated)->kernel());
    if (c.layers) {  // one more step with every layer timed (the timers cost a little)
        std::map<Module*, std::string> names;
        for (auto& [n, m] : model->named_modules())
            if (m->named_children().empty()) names[m] = n;
        std::map<const Node*, std::string> node_layer;  // the node each layer's output came from
        std::map<std::string, std::pair<double, double>> t;  // layer -> (forward, backward) seconds
        std::vector<std::string> order;
        Module::set_forward_timer([&](Module& m, const Tensor& out, double s) {
            auto it = names.find(&m);
            if (it == names.end()) return;
            if (!t.count(it->second)) order.push_back(it->second);
            t[it->second].first += s;
            if (out.grad_fn()) node_layer[out.grad_fn().get()] = it->second;
        });
        set_backward_timer([&](const Node& n, double s) {
            auto it = node_layer.find(&n);
            if (it != node_layer.end()) t[it->second].second += s;
        });
        step();
        Module::set_forward_timer(nullptr);
        set_backward_timer(nullptr);
        nlohmann::json layers = nlohmann::json::array();
        for (const auto& n : order) {
            layers.push_back({{"layer", n}, {"forward_ms", t[n].first * 1e3}, {"backward_ms", t[n].second * 1e3}});
        }
        j["layers"] = layers;
    }
    return j;
}

void print_row(const nlohmann::json& j) {
    std::printf("%-9s %-6s %-5s %5lld %3d %9.1f %10.1f %9.1f %8.1f %8.0f\n", j["model"].get<std::string>().c_str(),
                j["norm"].get<std::string>().c_str(), j["mode"].get<std::string>().c_str(),
                static_cast<long long>(j["batch_size"].get<int64_t>()), j["threads"].get<int>(),
                j["img_per_s"].get<double>(), j["ms_per_step_median"].get<double>(),
                j["ms_per_step_p90"].get<double>(), j["gflops"].get<double>(), j["peak_rss_mb"].get<double>());
    if (j.contains("layers")) {
        std::printf("    %-28s %10s %10s\n", "layer", "fwd ms", "bwd ms");
        for (const auto& l : j["layers"])
            std::printf("    %-28s %10.2f %10.2f\n", l["layer"].get<std::string>().c_str(), l["forward_ms"].get<double>(),
                        l["backward_ms"].get<double>());
    }
}

const char* kHeader = "model     norm   mode  batch thr     img/s  ms median    ms p90   GFLOP/s  peak MB\n";

}  // namespace

int main(int argc, char** argv) {
    Config c;
    bool json = false;
    CLI::App app{"bench: training and evaluation speed of the reference networks"};
    auto* m = app.add_option("--model", c.model, "network")->check(CLI::IsMember(model_names()))->capture_default_str();
    auto* n = app.add_option("--norm", c.norm, norm2d_help())->check(CLI::IsMember(norm2d_kinds()))->capture_default_str();
    auto* b = app.add_option("--batch-size", c.batch_size, "batch size")
                  ->check(flag::whole(1, 65536))
                  ->capture_default_str();
    auto* md = app.add_option("--mode", c.mode, "train or eval")
                   ->check(CLI::IsMember({"train", "eval"}))
                   ->capture_default_str();
    app.add_option("--image-size", c.image_size, "input height and width")
        ->check(flag::whole(8, 1024))
        ->capture_default_str();
    app.add_option("--threads", c.threads, "threads (default: MINNOW_NUM_THREADS or every core)")
        ->check(flag::threads());
    app.add_option("--warmup", c.warmup, "untimed steps first")->check(flag::whole(0, 100000))->capture_default_str();
    app.add_option("--steps", c.steps, "timed steps")->check(flag::whole(1, 100000))->capture_default_str();
    app.add_flag("--layers", c.layers, "also time each layer's forward and backward");
    app.add_flag("--json", json, "one JSON object per configuration");
    auto* q = app.add_flag("--int8", c.int8, "eval: time the int8 version of the model (layers/int8_model.h)");
    return run_app(app, argc, argv, [&] {
        setup_threads(c.threads);
        if (c.int8 && c.mode != "eval") throw Error("--int8: int8 is for inference; add --mode eval");
        if (c.int8 && c.layers) throw Error("--int8: --layers times float layers; the int8 model has none");
        if (m->count() || n->count() || b->count() || md->count() || q->count()) {
            nlohmann::json j = run_config(c);
            if (json) std::printf("%s\n", j.dump().c_str());
            else {
                std::printf("%s", kHeader);
                print_row(j);
            }
            return kExitOk;
        }
        // Every configuration, each in its own process (own peak memory).
        struct Sel { const char *model, *norm, *mode; int64_t batch, steps; };
        const Sel all[] = {{"cnn", "batch", "train", 128, 10}, {"cnn", "none", "train", 128, 10},
                           {"resnet20", "batch", "train", 128, 10}, {"cnn", "batch", "eval", 1, 100},
                           {"cnn", "batch", "eval", 256, 10}};
        if (!json) std::printf("%s", kHeader);
        for (const Sel& s : all) {
            std::string cmd = std::string(argv[0]) + " --json --model " + s.model + " --norm " + s.norm + " --mode " +
                              s.mode + " --batch-size " + std::to_string(s.batch) + " --steps " +
                              std::to_string(s.steps) + " --image-size " + std::to_string(c.image_size) +
                              (c.threads > 0 ? " --threads " + std::to_string(c.threads) : "") +
                              (c.layers ? " --layers" : "");
            FILE* p = popen(cmd.c_str(), "r");
            if (!p) throw Error("cannot run " + cmd);
            std::string outp;
            char buf[4096];
            while (size_t k = fread(buf, 1, sizeof buf, p)) outp.append(buf, k);
            if (pclose(p) != 0) throw Error("failed: " + cmd);
            if (json) std::printf("%s", outp.c_str());
            else print_row(nlohmann::json::parse(outp));
            std::fflush(stdout);
        }
        return kExitOk;
    });
}
