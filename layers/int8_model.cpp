// int8 inference of a trained cnn or ResNet20: the model as a plan of int8
// convs, calibration, and the forward pass (layers/int8_model.h has the arithmetic,
// docs/int8.md the derivation).
#include "layers/int8_model.h"


#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "kernels/aligned.h"
#include "layers/activation.h"
#include "layers/conv2d.h"
#include "layers/flatten.h"
#include "layers/linear.h"
#include "layers/models.h"
#include "layers/pooling.h"

namespace minnow {

namespace q8 = int8;

const char* calibration_name(Calibration c) {
    switch (c) {
        case Calibration::MinMax: return "minmax";
        case Calibration::Percentile: return "percentile";
        case Calibration::Mse: return "mse";
    }
    return "?";
}

Calibration parse_calibration(const std::string& name) {
    for (Calibration c : {Calibration::MinMax, Calibration::Percentile, Calibration::Mse})
        if (name == calibration_name(c)) return c;
    throw Error("calibration '" + name + "': expected minmax, percentile or mse");
}

namespace {

// ---------------------------------------------------------------- the plan
// The model as int8 will compute it: activations (0 is the image) and convs
// in the order they run, each with the float Conv2d it comes from. Run in
// float (run_plan), it is the model's own forward.
struct PlanConv {
    std::string name;
    Conv2d* conv;
    int input, output = -1, residual = -1;  // output -1: the features
    bool relu = false, pool = false;
};
struct Plan {
    std::vector<std::string> activations{"the input image"};
    std::vector<PlanConv> convs;
    std::string classifier_name;
    Linear* classifier = nullptr;
    int add(const std::string& name) {
        activations.push_back(name);
        return static_cast<int>(activations.size()) - 1;
    }
};

[[noreturn]] void refuse(const std::string& name, const Module* m, const std::string& why) {
    throw Error("quantize_int8: '" + name + "' (" + (m ? m->type_name() : "flatten") + ") " + why);
}

void require_eval(const std::string& name, const Module* m) {
    if (m->is_training()) refuse(name, m, "is in training mode; int8 is for inference: call eval() first");
}

// A module that must be an Identity: a BatchNorm folded away (or none).
void require_folded(const std::string& name, const Module* m) {
    require_eval(name, m);
    if (!dynamic_cast<const Identity*>(m))
        refuse(name, m,
               m->type_name().find("BatchNorm") != std::string::npos
                   ? "has no int8 version: fold BatchNorm into the conv before it first (layers/fold_batchnorm.h)"
                   : "has no int8 version (int8 takes convs, ReLU, 2x2 max-pools, residual blocks, the global "
                     "average pool and a Linear classifier)");
}

Conv2d* conv_at(const std::string& name, Module* m) {
    require_eval(name, m);
    auto* c = dynamic_cast<Conv2d*>(m);
    if (!c) refuse(name, m, "is not a Conv2d");
    return c;
}

// The cnn, or any Sequential of the layers int8_model.h lists.
Plan chain_plan(const std::vector<std::pair<std::string, Module*>>& steps) {
    Plan plan;
    bool pooled = false;
    for (const auto& [name, m] : steps) {
        if (plan.classifier) refuse(name, m, "comes after the classifier; int8 ends with the classifier");
        if (m) require_eval(name, m);
        if (!m || dynamic_cast<Flatten*>(m)) {
            if (!pooled) refuse(name, m, "comes before the global average pool");
        } else if (auto* conv = dynamic_cast<Conv2d*>(m)) {
            if (pooled) refuse(name, m, "comes after the global average pool");
            const int in = plan.convs.empty() ? 0 : plan.convs.back().output = plan.add(plan.convs.back().name + " output");
            plan.convs.push_back({name, conv, in});
        } else if (dynamic_cast<Identity*>(m)) {
        } else if (dynamic_cast<ReLU*>(m)) {
            if (plan.convs.empty() || pooled || plan.convs.back().relu || plan.convs.back().pool)
                refuse(name, m, "does not follow a conv; int8 takes a ReLU only right after a conv");
            plan.convs.back().relu = true;
        } else if (auto* pool = dynamic_cast<MaxPool2d*>(m)) {
            if (pool->kernel_size != 2 || pool->stride != 2 || pool->padding != 0)
                refuse(name, m, "is not a 2x2 max-pool with stride 2 and no padding, the only one int8 takes");
            if (plan.convs.empty() || pooled || plan.convs.back().pool)
                refuse(name, m, "does not follow a conv (or its ReLU); int8 pools only right after one");
            plan.convs.back().pool = true;
        } else if (auto* gap = dynamic_cast<AdaptiveAvgPool2d*>(m)) {
            if (gap->output_size != 1) refuse(name, m, "pools to more than 1x1; int8 takes a global average pool only");
            if (plan.convs.empty()) refuse(name, m, "has no conv before it");
            if (plan.convs.back().pool) refuse(name, m, "follows a max-pool; int8 takes the global pool right after a conv");
            pooled = true;
        } else if (auto* linear = dynamic_cast<Linear*>(m)) {
            if (!pooled) refuse(name, m, "comes before the global average pool");
            plan.classifier = linear;
            plan.classifier_name = name;
        } else {
            require_folded(name, m);  // says why
        }
    }
    if (plan.convs.empty()) throw Error("quantize_int8: the model has no Conv2d");
    if (!pooled) throw Error("quantize_int8: the model has no AdaptiveAvgPool2d(1) after its convs");
    if (!plan.classifier) throw Error("quantize_int8: the model has no Linear classifier at the end");
    return plan;
}

// ResNet20 (layers/models.h): relu(conv1) then blocks relu(conv2(relu(conv1(x))) + shortcut(x)).
Plan resnet_plan(ResNet20& net) {
    Plan plan;
    require_eval("", &net);
    require_folded("bn1", net.bn1.get());
    plan.convs.push_back({"conv1", conv_at("conv1", net.conv1.get()), 0});
    plan.convs.back().relu = true;
    int x = plan.convs.back().output = plan.add("conv1 -> relu");
    for (const auto& [stage_name, stage] : net.named_children()) {
        auto* blocks = dynamic_cast<Sequential*>(stage.get());
        if (!blocks) continue;  // conv1, bn1, linear
        for (const auto& [index, child] : blocks->named_children()) {
            const std::string b = stage_name + "." + index + ".";
            auto* block = dynamic_cast<BasicBlock*>(child.get());
            if (!block) refuse(b.substr(0, b.size() - 1), child.get(), "is not a BasicBlock");
            require_eval(b.substr(0, b.size() - 1), block);
            require_folded(b + "bn1", block->bn1.get());
            require_folded(b + "bn2", block->bn2.get());
            plan.convs.push_back({b + "conv1", conv_at(b + "conv1", block->conv1.get()), x});
            plan.convs.back().relu = true;
            const int t = plan.convs.back().output = plan.add(b + "conv1 -> relu");
            int residual = x;
            const auto& sc = block->shortcut->named_children();
            if (!sc.empty()) {
                if (sc.size() != 2) refuse(b + "shortcut", block->shortcut.get(), "is not a conv and its BatchNorm");
                require_folded(b + "shortcut.1", sc[1].second.get());
                plan.convs.push_back({b + "shortcut.0", conv_at(b + "shortcut.0", sc[0].second.get()), x});
                residual = plan.convs.back().output = plan.add(b + "shortcut");
            }
            plan.convs.push_back({b + "conv2", conv_at(b + "conv2", block->conv2.get()), t, -1, residual, true});
            x = plan.convs.back().output = plan.add(b + "conv2 + shortcut -> relu");
        }
    }
    plan.convs.back().output = -1;  // the last block's output: the features
    plan.activations.pop_back();
    plan.classifier = net.linear.get();
    plan.classifier_name = "linear";
    return plan;
}

Plan plan_of(Module& model) {
    if (auto* net = dynamic_cast<ResNet20*>(&model)) return resnet_plan(*net);
    std::vector<std::pair<std::string, Module*>> steps;
    if (auto* cnn = dynamic_cast<ReferenceCNN*>(&model)) {
        require_eval("", cnn);
        for (auto& [name, child] : cnn->features->named_children()) steps.push_back({"features." + name, child.get()});
        steps.push_back({"flatten", nullptr});
        steps.push_back({"classifier", cnn->classifier.get()});
    } else if (dynamic_cast<Sequential*>(&model)) {
        for (auto& [name, child] : model.named_children()) steps.push_back({name, child.get()});
    } else {
        throw Error("quantize_int8: expected the cnn, ResNet20 or a Sequential, got a " + model.type_name());
    }
    return chain_plan(steps);
}

// The plan in float on images x: calls see(activation, value) for each
// activation (0 included) and returns the logits.
template <class See>
Tensor run_plan(const Plan& plan, const Tensor& x, See see) {
    NoGradGuard no_grad;
    std::vector<Tensor> values(plan.activations.size());
    values[0] = x;
    see(0, x);
    Tensor features;
    for (const PlanConv& c : plan.convs) {
        Tensor y = (*c.conv)(values[c.input]);
        if (c.residual >= 0) y = add(y, values[c.residual]);
        if (c.relu) y = relu(y);
        if (c.pool) y = max_pool2d(y, 2, 2);
        if (c.output < 0) features = y;
        else see(c.output, values[c.output] = y);
    }
    return (*plan.classifier)(adaptive_avg_pool2d(features, 1).flatten(1));
}

// ---------------------------------------------------------------- calibration
constexpr int64_t kBins = 2048;

// The values seen of one activation.
struct Observation {
    double min = std::numeric_limits<double>::infinity(), max = -std::numeric_limits<double>::infinity();
    int64_t zeros = 0, count = 0;
    std::vector<int64_t> histogram;  // of the values in (0, max], kBins bins
};

struct Quant {
    double scale = 1;
    int zero = 0;
};

// A tensor with negative values (the input image): its min and max, with 0
// inside the range so that 0.0 (the conv's zero padding) is a byte exactly.
Quant asymmetric(double lo, double hi) {
    lo = std::min(lo, 0.0), hi = std::max(hi, 0.0);
    Quant q;
    q.scale = hi > lo ? (hi - lo) / q8::kActivationMax : 1.0;
    q.zero = static_cast<int>(std::clamp(std::nearbyint(-lo / q.scale), 0.0, double(q8::kActivationMax)));
    return q;
}

// A tensor with no negative values: scale = the clipping point / 127, zero point 0.
double clip_point(const Observation& o, const Int8Options& opt) {
    if (opt.calibration == Calibration::MinMax || o.max <= 0) return o.max;
    const double width = o.max / kBins;
    if (opt.calibration == Calibration::Percentile) {
        const double want = opt.percentile / 100.0 * static_cast<double>(o.count);
        double seen = static_cast<double>(o.zeros);
        for (int64_t b = 0; b < kBins; ++b) {
            seen += static_cast<double>(o.histogram[b]);
            if (seen >= want) return (b + 1) * width;
        }
        return o.max;
    }
    // Mse: for the clipping point t at the top of bin b, the values below it
    // round with an error uniform over a step s = t/127 (mean square s^2/12),
    // those above it are clipped to t. Exact zeros are bytes exactly and
    // count for nothing.
    double best = o.max, best_error = std::numeric_limits<double>::infinity();
    for (int64_t b = 0; b < kBins; ++b) {
        const double t = (b + 1) * width, s = t / q8::kActivationMax;
        double error = 0, below = 0;
        for (int64_t i = 0; i <= b; ++i) below += static_cast<double>(o.histogram[i]);
        error += below * s * s / 12;
        for (int64_t i = b + 1; i < kBins; ++i) {
            const double c = (i + 0.5) * width - t;
            error += static_cast<double>(o.histogram[i]) * c * c;
        }
        if (error < best_error) best_error = error, best = t;
    }
    return best;
}

// The plan in float must be the model: the same logits up to float rounding
// (the ops are the model's own, so they agree to its last bits but for the
// order of an addition).
void check_plan(Module& model, const Tensor& x, const Tensor& plan_logits) {
    NoGradGuard no_grad;
    const Tensor want = model(x);
    double scale = 0, diff = 0;
    for (int64_t i = 0; i < want.numel(); ++i) {
        scale = std::max(scale, std::fabs(double(want.data()[i])));
        diff = std::max(diff, std::fabs(double(want.data()[i]) - plan_logits.data()[i]));
    }
    if (!(diff <= 1e-4 * scale + 1e-6))
        throw Error("quantize_int8: the int8 plan of this " + model.type_name() +
                    " does not compute its forward (logits " + std::to_string(diff) +
                    " apart); its layers are not used in the order int8 assumes");
}

// Each activation's scale and zero point from its values on the images
// (two passes over them when the method needs a histogram). Checks on the
// first batch that the plan in float gives the model's own logits.
std::vector<Quant> calibrate(Module& model, const Plan& plan, const Tensor& images, const Int8Options& opt) {
    const int64_t N = images.size(0), per_image = images.numel() / N;
    bool first_pass = true;  // the plan is checked once, on the first pass's first batch
    auto batches = [&](auto see) {
        for (int64_t n0 = 0; n0 < N; n0 += opt.batch_size) {
            const int64_t n = std::min(opt.batch_size, N - n0);
            Tensor x = Tensor::empty({n, images.size(1), images.size(2), images.size(3)});
            std::memcpy(x.data(), images.data() + n0 * per_image, sizeof(float) * n * per_image);
            const Tensor logits = run_plan(plan, x, see);
            if (n0 == 0 && first_pass) check_plan(model, x, logits);
        }
        first_pass = false;
    };
    std::vector<Observation> obs(plan.activations.size());
    batches([&](int a, const Tensor& x) {
        const float* p = x.data();
        for (int64_t i = 0; i < x.numel(); ++i) {
            if (!std::isfinite(p[i]))
                throw Error("quantize_int8: " + plan.activations[a] + " has a NaN or an infinity on the calibration images");
            obs[a].min = std::min(obs[a].min, double(p[i])), obs[a].max = std::max(obs[a].max, double(p[i]));
        }
        obs[a].count += x.numel();
    });
    if (opt.calibration != Calibration::MinMax) {
        for (auto& o : obs) o.histogram.assign(kBins, 0);
        batches([&](int a, const Tensor& x) {
            Observation& o = obs[a];
            if (o.min < 0 || o.max <= 0) return;
            const float* p = x.data();
            for (int64_t i = 0; i < x.numel(); ++i) {
                if (p[i] == 0.f) ++o.zeros;
                else o.histogram[std::min<int64_t>(kBins - 1, static_cast<int64_t>(p[i] / o.max * kBins))]++;
            }
        });
    }
    std::vector<Quant> q;
    for (const auto& o : obs) {
        if (o.min < 0) q.push_back(asymmetric(o.min, o.max));
        else {
            const double t = clip_point(o, opt);
            q.push_back({t > 0 ? t / q8::kActivationMax : 1.0, 0});
        }
    }
    return q;
}

// Per-output-channel symmetric weights: W [O][K] -> q [O][K], scales, sums.
void quantize_weights(const float* W, int64_t O, int64_t K, std::vector<int8_t>& q, std::vector<float>& scale,
                      std::vector<int32_t>& sum) {
    q.assign(O * K, 0), scale.assign(O, 1.f), sum.assign(O, 0);
    for (int64_t o = 0; o < O; ++o) {
        float amax = 0;
        for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(W[o * K + k]));
        if (!std::isfinite(amax)) throw Error("a weight is NaN or infinite");
        if (amax > 0) scale[o] = amax / q8::kWeightMax;
        for (int64_t k = 0; k < K; ++k) {
            const float v = std::clamp(std::nearbyint(W[o * K + k] / scale[o]), float(-q8::kWeightMax),
                                       float(q8::kWeightMax));
            q[o * K + k] = static_cast<int8_t>(v);
            sum[o] += static_cast<int32_t>(v);
        }
    }
}

thread_local AlignedVector<uint8_t> t_bytes;
thread_local AlignedVector<int32_t> t_acc;

}  // namespace

// ---------------------------------------------------------------- quantization
std::shared_ptr<Int8Model> quantize_int8(Module& model, const Tensor& images, const Int8Options& opt) {
    if (images.dim() != 4 || images.size(0) < 1)
        throw Error("quantize_int8: expected calibration images [N, C, H, W] with N >= 1, got " +
                    shape_str(images.shape()));
    if (opt.calibration == Calibration::Percentile && !(opt.percentile > 0 && opt.percentile <= 100))
        throw Error("quantize_int8: the percentile must be in (0, 100], got " + std::to_string(opt.percentile));
    if (opt.batch_size < 1) throw Error("quantize_int8: the calibration batch size must be at least 1");
    const Plan plan = plan_of(model);
    if (images.size(1) != plan.convs.front().conv->in_channels)
        throw Error("quantize_int8: the calibration images have " + std::to_string(images.size(1)) +
                    " channels, the first conv takes " + std::to_string(plan.convs.front().conv->in_channels));
    const auto quants = calibrate(model, plan, images, opt);

    std::vector<Int8Model::Activation> acts(plan.activations.size());
    for (size_t a = 0; a < acts.size(); ++a) {
        acts[a].name = plan.activations[a];
        acts[a].scale = static_cast<float>(quants[a].scale), acts[a].zero = quants[a].zero;
    }
    acts[0].channels = images.size(1);
    int image_readers = 0;
    for (const PlanConv& pc : plan.convs) image_readers += (pc.input == 0) + (pc.residual == 0);
    std::vector<Int8Model::Conv> convs;
    for (const PlanConv& pc : plan.convs) {
        const Conv2d& c = *pc.conv;
        const int64_t O = c.out_channels, K = c.in_channels * c.kernel_size * c.kernel_size;
        std::vector<int8_t> qw;
        std::vector<float> sw;
        std::vector<int32_t> Sw;
        try {
            quantize_weights(c.weight.data(), O, K, qw, sw, Sw);
        } catch (const Error& e) {
            throw Error("quantize_int8: '" + pc.name + "': " + e.what());
        }
        Int8Model::Conv q;
        q.name = pc.name, q.stride = c.stride, q.pad = c.padding;
        const int64_t k = c.kernel_size;
        if (opt.image_patches && pc.input == 0 && image_readers == 1 && c.stride == 1 && 2 * c.padding + 1 == k &&
            K <= 32) {
            // The image as patches, the conv as a 1x1 conv over K channels: W [O][C][k][k] is W [O][K][1][1].
            q.patch_kernel = k, q.pad = 0;
            q.weights = q8::pack_weights(qw.data(), O, K, 1, 1);
            acts[0].channels = K;
        } else {
            q.weights = q8::pack_weights(qw.data(), O, c.in_channels, k, k);
            acts[pc.input].border = std::max(acts[pc.input].border, c.padding);
        }
        q.input = pc.input, q.output = pc.output, q.residual = pc.residual;
        q.relu = pc.relu, q.pool = pc.pool;
        if (pc.output >= 0) acts[pc.output].channels = O;
        const Quant in = quants[pc.input], out = pc.output >= 0 ? quants[pc.output] : Quant{1.0, 0};
        if (pc.residual >= 0) q.residual_multiplier = static_cast<float>(quants[pc.residual].scale / out.scale);
        for (int64_t o = 0; o < O; ++o) {
            const double sxw = in.scale * sw[o], b = c.bias.defined() ? c.bias.data()[o] : 0.0;
            double offset = (b - sxw * in.zero * Sw[o]) / out.scale + out.zero;
            if (pc.residual >= 0) offset -= quants[pc.residual].zero * double(q.residual_multiplier);
            q.multiplier.push_back(static_cast<float>(sxw / out.scale));
            q.offset.push_back(static_cast<float>(offset));
        }
        convs.push_back(std::move(q));
    }
    const Linear& L = *plan.classifier;
    const int64_t last = plan.convs.back().conv->out_channels;
    if (L.in_features != last)
        throw Error("quantize_int8: '" + plan.classifier_name + "' takes " + std::to_string(L.in_features) +
                    " features, the last conv gives " + std::to_string(last));
    Int8Model::Classifier cls;
    cls.name = plan.classifier_name, cls.in = L.in_features, cls.out = L.out_features;
    try {
        quantize_weights(L.weight.data(), cls.out, cls.in, cls.weight, cls.weight_scale, cls.weight_sum);
    } catch (const Error& e) {
        throw Error("quantize_int8: '" + cls.name + "': " + e.what());
    }
    cls.bias.assign(cls.out, 0.f);
    if (L.bias.defined()) std::copy(L.bias.data(), L.bias.data() + cls.out, cls.bias.begin());
    return std::make_shared<Int8Model>(std::move(acts), std::move(convs), std::move(cls),
                                       opt.kernel == q8::Kernel::Auto ? q8::best_kernel() : opt.kernel);
}

// ---------------------------------------------------------------- the forward pass
Int8Model::Int8Model(std::vector<Activation> activations, std::vector<Conv> convs, Classifier classifier,
                     q8::Kernel kernel)
    : activations_(std::move(activations)), convs_(std::move(convs)), classifier_(std::move(classifier)),
      kernel_(kernel) {
    if (!q8::kernel_available(kernel_))
        throw Error(std::string("Int8Model: the ") + q8::kernel_name(kernel_) + " kernel is not available here");
    const int n = static_cast<int>(activations_.size());
    for (const Conv& c : convs_)
        if (c.input < 0 || c.input >= n || c.output >= n || c.residual >= n || (c.pool && c.residual >= 0) ||
            c.multiplier.size() != size_t(c.weights.O) || c.offset.size() != size_t(c.weights.O))
            throw Error("Int8Model: conv '" + c.name + "' is not consistent with the model's activations");
    if (convs_.empty() || convs_.back().output != -1 || classifier_.in != convs_.back().weights.O)
        throw Error("Int8Model: the last conv must give the classifier's features");
}

std::string Int8Model::extra_repr() const {
    return std::to_string(convs_.size()) + " int8 convs, int8 dynamic " + classifier_.name + ", kernel=" +
           q8::kernel_name(kernel_);
}

// One image through the convs: x [C][H][W] -> logits [classes]. With
// rows_in_parallel, every conv's rows are shared by the threads (a batch
// smaller than the thread count); otherwise the caller runs one image per thread.
void Int8Model::run_image(const float* x, int64_t H, int64_t W, float* logits,
                          [[maybe_unused]] bool rows_in_parallel) {  // read by the `#pragma omp` lines only
    // The size of every activation at this image size, each conv's shape, and
    // where each activation's bytes lie.
    const size_t n = activations_.size();
    std::vector<int64_t> height(n, 0), width(n, 0), offset(n, 0);
    height[0] = H, width[0] = W;
    std::vector<q8::ConvShape> shapes;
    int64_t fh = 0, fw = 0;  // the features' size
    auto too_small = [&](const Conv& c) {
        return Error("Int8Model: a " + std::to_string(H) + "x" + std::to_string(W) + " image is too small for '" +
                     c.name + "'");
    };
    for (const Conv& c : convs_) {
        const Activation& a = activations_[c.input];
        const q8::ConvShape s{c.weights.C, height[c.input], width[c.input], c.weights.O, c.weights.kh,
                              c.weights.kw, c.stride, c.pad, a.border};
        if (s.H + 2 * s.pad < s.kh || s.W + 2 * s.pad < s.kw || (c.pool && (s.Ho() < 2 || s.Wo() < 2)))
            throw too_small(c);
        shapes.push_back(s);
        const int64_t ho = c.pool ? s.Ho() / 2 : s.Ho(), wo = c.pool ? s.Wo() / 2 : s.Wo();
        if (c.residual >= 0 && (height[c.residual] != ho || width[c.residual] != wo))
            throw Error("Int8Model: '" + c.name + "' gives " + std::to_string(ho) + "x" + std::to_string(wo) +
                        ", its residual is " + std::to_string(height[c.residual]) + "x" +
                        std::to_string(width[c.residual]));
        if (c.output >= 0) height[c.output] = ho, width[c.output] = wo;
        else fh = ho, fw = wo;
    }
    auto bytes_of = [&](size_t a) {
        const int64_t b = activations_[a].border;
        return (height[a] + 2 * b) * (width[a] + 2 * b) * q8::round_up(activations_[a].channels, q8::kChannelGroup);
    };
    int64_t bytes = 0;
    for (size_t a = 0; a < n; ++a) offset[a] = bytes, bytes += bytes_of(a);
    thread_local AlignedVector<uint8_t> inputs_buffer;
    thread_local AlignedVector<float> features_buffer;
    uint8_t* buffers = scratch(inputs_buffer, bytes);
    float* features = scratch(features_buffer, fh * fw * classifier_.in);
    // Pixel (y, x) of activation a (inside its border).
    auto at = [&](size_t a, int64_t y, int64_t xx) {
        const int64_t b = activations_[a].border, Cp = q8::round_up(activations_[a].channels, q8::kChannelGroup);
        return buffers + offset[a] + ((y + b) * (width[a] + 2 * b) + xx + b) * Cp;
    };

    const Activation& image = activations_[0];
    const Conv& first = convs_.front();
    bool finite = true;
    if (first.patch_kernel) {  // with rows_in_parallel, in bands of 8 rows shared by the threads
        const int64_t band = rows_in_parallel ? 8 : H;  // (each band quantizes 2 rows more than it writes)
        const int64_t bands = (H + band - 1) / band;
#pragma omp parallel for schedule(static) reduction(&& : finite) if (rows_in_parallel && bands > 1)
        for (int64_t r = 0; r < bands; ++r)
            finite = q8::quantize_patches(x, image_channels(), H, W, first.patch_kernel, 1.f / image.scale, image.zero,
                                          buffers, r * band, std::min(H, (r + 1) * band)) &&
                     finite;
    } else {
        finite = q8::quantize_image(x, image.channels, H, W, 1.f / image.scale, image.zero, image.border, buffers);
    }
    if (!finite) {
        std::fill(logits, logits + classifier_.out, std::numeric_limits<float>::quiet_NaN());
        return;
    }
    for (size_t k = 0; k < convs_.size(); ++k) {
        const Conv& c = convs_[k];
        const q8::ConvShape& s = shapes[k];
        const int64_t Ho = s.Ho(), Wo = s.Wo(), O = s.O, Op = s.Op(), row = Wo * Op;
        const uint8_t* in = buffers + offset[c.input];
        const int out_zero = c.output >= 0 ? activations_[c.output].zero : 0, lo = c.relu ? out_zero : 0;
        const int64_t out_stride = c.output >= 0 ? q8::round_up(O, q8::kChannelGroup) : O;
        if (c.output >= 0) {  // the border (and any padding channels) is 0.0; the conv writes the rest
            const int64_t b = activations_[c.output].border, Wb = width[c.output] + 2 * b, Hb = height[c.output] + 2 * b;
            uint8_t* base = buffers + offset[c.output];
            const auto zero = static_cast<uint8_t>(out_zero);
            if (out_stride != O) {
                std::fill(base, base + bytes_of(c.output), zero);
            } else {
                std::fill(base, base + b * Wb * O, zero);                      // the rows above
                std::fill(base + (Hb - b) * Wb * O, base + Hb * Wb * O, zero);  // and below
                for (int64_t y = b; y < Hb - b; ++y) {                          // left and right
                    std::fill(base + y * Wb * O, base + (y * Wb + b) * O, zero);
                    std::fill(base + ((y + 1) * Wb - b) * O, base + (y + 1) * Wb * O, zero);
                }
            }
        }
        auto residual = [&](int64_t y) {
            if (c.residual < 0) return q8::Residual{};
            return q8::Residual{at(c.residual, y, 0), q8::round_up(activations_[c.residual].channels, q8::kChannelGroup),
                                c.residual_multiplier};
        };
        const int64_t units = c.pool ? Ho / 2 : Ho;
#pragma omp parallel for schedule(static) if (rows_in_parallel && units > 1)
        for (int64_t u = 0; u < units; ++u) {
            if (c.output < 0) {
                int32_t* acc = scratch(t_acc, row);
                q8::conv(in, s, c.weights, u, u + 1, acc, kernel_);
                q8::dequantize_row(acc, Wo, O, Op, c.multiplier.data(), c.offset.data(), residual(u), c.relu,
                                   features + u * Wo * O, O);
            } else if (!c.pool) {
                q8::Requantization r{c.multiplier.data(), c.offset.data(), residual(u), 0, lo, at(c.output, u, 0),
                                     out_stride, 0};
                q8::conv_requantize(in, s, c.weights, u, u + 1, r, kernel_);
            } else {  // rows 2u and 2u+1, requantized into two rows of bytes, then pooled 2x2
                uint8_t* q = scratch(t_bytes, 2 * Wo * O);
                q8::Requantization r{c.multiplier.data(), c.offset.data(), {}, 0, lo, q, O, Wo * O};
                q8::conv_requantize(in, s, c.weights, 2 * u, 2 * u + 2, r, kernel_);
                for (int64_t px = 0; px < Wo / 2; ++px) {
                    const uint8_t *a = q + 2 * px * O, *b = a + O, *d = a + Wo * O, *e = d + O;
                    uint8_t* out = at(c.output, u, px);
                    for (int64_t o = 0; o < O; ++o) out[o] = std::max(std::max(a[o], b[o]), std::max(d[o], e[o]));
                }
            }
        }
    }
    // Global average pool (in pixel order, so the same sum on any thread count), then the classifier.
    const int64_t P = fh * fw, F = classifier_.in;
    std::vector<float> f(F, 0.f);
    for (int64_t p = 0; p < P; ++p)
        for (int64_t o = 0; o < F; ++o) f[o] += features[p * F + o];
    float lo = 0, hi = 0;
    for (float& v : f) v /= static_cast<float>(P), lo = std::min(lo, v), hi = std::max(hi, v);
    // Dynamic quantization of the features (their own range, with 0 inside), as quantize_dynamic does.
    const Quant fq = asymmetric(lo, hi);
    const float inv = static_cast<float>(1.0 / fq.scale);
    std::vector<int32_t> qf(F);
    for (int64_t i = 0; i < F; ++i)
        qf[i] = static_cast<int32_t>(
            std::clamp(std::nearbyint(f[i] * inv) + fq.zero, 0.f, static_cast<float>(q8::kActivationMax)));
    for (int64_t o = 0; o < classifier_.out; ++o) {
        int32_t acc = 0;
        for (int64_t i = 0; i < F; ++i) acc += qf[i] * classifier_.weight[o * F + i];
        logits[o] = std::fma(static_cast<float>(acc - fq.zero * classifier_.weight_sum[o]),
                             static_cast<float>(fq.scale) * classifier_.weight_scale[o], classifier_.bias[o]);
    }
}

int64_t Int8Model::image_channels() const {
    const Conv& first = convs_.front();
    return first.patch_kernel ? first.weights.C / (first.patch_kernel * first.patch_kernel) : activations_[0].channels;
}

Tensor Int8Model::forward(const Tensor& x) {
    if (x.dim() != 4 || x.size(1) != image_channels())
        throw Error("Int8Model: expected input of shape [N, " + std::to_string(image_channels()) +
                    ", H, W], got " + shape_str(x.shape()));
    const int64_t N = x.size(0), H = x.size(2), W = x.size(3), per_image = x.size(1) * H * W;
    Tensor y = Tensor::empty({N, classifier_.out});
    const int threads = get_num_threads();
    if (N >= threads && threads > 1) {
        std::string failure;
#pragma omp parallel for schedule(static)
        for (int64_t n = 0; n < N; ++n) {
            try {
                run_image(x.data() + n * per_image, H, W, y.data() + n * classifier_.out, false);
            } catch (const Error& e) {
#pragma omp critical
                failure = e.what();
            }
        }
        if (!failure.empty()) throw Error(failure);
    } else {
        for (int64_t n = 0; n < N; ++n)
            run_image(x.data() + n * per_image, H, W, y.data() + n * classifier_.out, threads > 1);
    }
    return y;
}

}  // namespace minnow
