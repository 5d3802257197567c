// int8 inference of a trained cnn: the model as a chain of int8 convs,
// calibration, and the forward pass (layers/int8_model.h has the arithmetic,
// docs/int8.md the derivation).
#include "layers/int8_model.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/autograd.h"
#include "core/error.h"
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

// ---------------------------------------------------------------- the chain of layers
struct Step {
    std::string name;
    Module* module;  // null: the flatten of ReferenceCNN's forward
};

std::vector<Step> chain_of(Module& model) {
    std::vector<Step> steps;
    auto add_children = [&](Module& m, const std::string& prefix) {
        for (auto& [name, child] : m.named_children()) steps.push_back({prefix + name, child.get()});
    };
    if (auto* cnn = dynamic_cast<ReferenceCNN*>(&model)) {
        add_children(*cnn->features, "features.");
        steps.push_back({"flatten", nullptr});
        steps.push_back({"classifier", cnn->classifier.get()});
    } else if (dynamic_cast<Sequential*>(&model)) {
        add_children(model, "");
    } else {
        throw Error("quantize_int8: expected a Sequential or the cnn (ReferenceCNN), got a " + model.type_name() +
                    " (resnet20's residual blocks have no int8 version)");
    }
    return steps;
}

// What the chain is, checked: convs (each with its ReLU and pool), then the
// global pool, then the classifier.
struct Plan {
    struct ConvAt {
        size_t step;
        Conv2d* conv;
        bool relu = false, pool = false;
    };
    std::vector<ConvAt> convs;
    size_t global_pool = 0;
    std::string classifier_name;
    Linear* classifier = nullptr;
};

Plan plan_of(const std::vector<Step>& steps) {
    Plan plan;
    bool pooled = false;
    auto refuse = [](const Step& s, const std::string& why) {
        throw Error("quantize_int8: '" + s.name + "' (" + (s.module ? s.module->type_name() : "flatten") + ") " + why);
    };
    for (size_t i = 0; i < steps.size(); ++i) {
        const Step& s = steps[i];
        Module* m = s.module;
        if (plan.classifier) refuse(s, "comes after the classifier; int8 ends with the classifier");
        if (m && m->is_training()) refuse(s, "is in training mode; int8 is for inference: call eval() first");
        if (!m || dynamic_cast<Flatten*>(m)) {
            if (!pooled) refuse(s, "comes before the global average pool");
        } else if (auto* conv = dynamic_cast<Conv2d*>(m)) {
            if (pooled) refuse(s, "comes after the global average pool");
            plan.convs.push_back({i, conv});
        } else if (dynamic_cast<Identity*>(m)) {
        } else if (dynamic_cast<ReLU*>(m)) {
            if (plan.convs.empty() || pooled || plan.convs.back().relu || plan.convs.back().pool)
                refuse(s, "does not follow a conv; int8 takes a ReLU only right after a conv");
            plan.convs.back().relu = true;
        } else if (auto* pool = dynamic_cast<MaxPool2d*>(m)) {
            if (pool->kernel_size != 2 || pool->stride != 2 || pool->padding != 0)
                refuse(s, "is not a 2x2 max-pool with stride 2 and no padding, the only one int8 takes");
            if (plan.convs.empty() || pooled || plan.convs.back().pool)
                refuse(s, "does not follow a conv (or its ReLU); int8 pools only right after one");
            plan.convs.back().pool = true;
        } else if (auto* gap = dynamic_cast<AdaptiveAvgPool2d*>(m)) {
            if (gap->output_size != 1) refuse(s, "pools to more than 1x1; int8 takes a global average pool only");
            if (plan.convs.empty()) refuse(s, "has no conv before it");
            if (plan.convs.back().pool) refuse(s, "follows a max-pool; int8 takes the global pool right after a conv");
            pooled = true;
            plan.global_pool = i;
        } else if (auto* linear = dynamic_cast<Linear*>(m)) {
            if (!pooled) refuse(s, "comes before the global average pool");
            plan.classifier = linear;
            plan.classifier_name = s.name;
        } else if (m->type_name().find("Norm") != std::string::npos) {
            refuse(s, "has no int8 version: fold BatchNorm into the conv before it first (layers/fold_batchnorm.h)");
        } else {
            refuse(s, "has no int8 version (int8 takes Conv2d, ReLU, MaxPool2d(2), Identity, AdaptiveAvgPool2d(1), "
                      "Flatten and one Linear)");
        }
    }
    if (plan.convs.empty()) throw Error("quantize_int8: the model has no Conv2d");
    if (!pooled) throw Error("quantize_int8: the model has no AdaptiveAvgPool2d(1) after its convs");
    if (!plan.classifier) throw Error("quantize_int8: the model has no Linear classifier at the end");
    return plan;
}

// ---------------------------------------------------------------- calibration
constexpr int64_t kBins = 2048;

// The values seen at one conv's input.
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

// Runs the float chain up to its global pool on the calibration images,
// calling see(k, x) with each conv k's input.
template <class See>
void run_float(const std::vector<Step>& steps, const Plan& plan, const Tensor& images, int64_t batch_size, See see) {
    NoGradGuard no_grad;
    const int64_t N = images.size(0), per_image = images.numel() / std::max<int64_t>(N, 1);
    for (int64_t n0 = 0; n0 < N; n0 += batch_size) {
        const int64_t n = std::min(batch_size, N - n0);
        Tensor x = Tensor::empty({n, images.size(1), images.size(2), images.size(3)});
        std::memcpy(x.data(), images.data() + n0 * per_image, sizeof(float) * n * per_image);
        size_t k = 0;
        for (size_t i = 0; i < plan.global_pool; ++i) {
            if (k < plan.convs.size() && plan.convs[k].step == i) see(k++, x);
            x = (*steps[i].module)(x);
        }
    }
}

std::vector<Quant> calibrate(const std::vector<Step>& steps, const Plan& plan, const Tensor& images,
                             const Int8Options& opt) {
    std::vector<Observation> obs(plan.convs.size());
    run_float(steps, plan, images, opt.batch_size, [&](size_t k, const Tensor& x) {
        const float* p = x.data();
        for (int64_t i = 0; i < x.numel(); ++i) {
            if (!std::isfinite(p[i]))
                throw Error("quantize_int8: the input of '" + steps[plan.convs[k].step].name +
                            "' has a NaN or an infinity on the calibration images");
            obs[k].min = std::min(obs[k].min, double(p[i])), obs[k].max = std::max(obs[k].max, double(p[i]));
        }
        obs[k].count += x.numel();
    });
    const bool histograms = opt.calibration != Calibration::MinMax;
    if (histograms) {
        for (auto& o : obs) o.histogram.assign(kBins, 0);
        run_float(steps, plan, images, opt.batch_size, [&](size_t k, const Tensor& x) {
            Observation& o = obs[k];
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

thread_local std::vector<uint8_t> t_bytes;
thread_local std::vector<int32_t> t_acc;

template <class T>
T* scratch(std::vector<T>& v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
}

}  // namespace

// ---------------------------------------------------------------- quantization
std::shared_ptr<Int8Model> quantize_int8(Module& model, const Tensor& images, const Int8Options& opt) {
    if (images.dim() != 4 || images.size(0) < 1)
        throw Error("quantize_int8: expected calibration images [N, C, H, W] with N >= 1, got " +
                    shape_str(images.shape()));
    if (opt.calibration == Calibration::Percentile && !(opt.percentile > 0 && opt.percentile <= 100))
        throw Error("quantize_int8: the percentile must be in (0, 100], got " + std::to_string(opt.percentile));
    if (opt.batch_size < 1) throw Error("quantize_int8: the calibration batch size must be at least 1");
    const auto steps = chain_of(model);
    const Plan plan = plan_of(steps);
    if (images.size(1) != plan.convs.front().conv->in_channels)
        throw Error("quantize_int8: the calibration images have " + std::to_string(images.size(1)) +
                    " channels, the first conv takes " + std::to_string(plan.convs.front().conv->in_channels));
    const auto quants = calibrate(steps, plan, images, opt);

    std::vector<Int8Model::Conv> convs;
    for (size_t k = 0; k < plan.convs.size(); ++k) {
        const Conv2d& c = *plan.convs[k].conv;
        const std::string& name = steps[plan.convs[k].step].name;
        const int64_t O = c.out_channels, K = c.in_channels * c.kernel_size * c.kernel_size;
        std::vector<int8_t> qw;
        std::vector<float> sw;
        std::vector<int32_t> Sw;
        try {
            quantize_weights(c.weight.data(), O, K, qw, sw, Sw);
        } catch (const Error& e) {
            throw Error("quantize_int8: '" + name + "': " + e.what());
        }
        Int8Model::Conv q;
        q.name = name, q.stride = c.stride, q.pad = c.padding;
        q.weights = q8::pack_weights(qw.data(), O, c.in_channels, c.kernel_size, c.kernel_size);
        q.in_scale = static_cast<float>(quants[k].scale), q.in_zero = quants[k].zero;
        q.relu = plan.convs[k].relu, q.pool = plan.convs[k].pool;
        q.to_float = k + 1 == plan.convs.size();
        const Quant out = q.to_float ? Quant{1.0, 0} : quants[k + 1];
        q.out_zero = out.zero;
        for (int64_t o = 0; o < O; ++o) {
            const double sxw = quants[k].scale * sw[o], b = c.bias.defined() ? c.bias.data()[o] : 0.0;
            q.multiplier.push_back(static_cast<float>(sxw / out.scale));
            q.offset.push_back(static_cast<float>((b - sxw * quants[k].zero * Sw[o]) / out.scale + out.zero));
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
    return std::make_shared<Int8Model>(std::move(convs), std::move(cls),
                                       opt.kernel == q8::Kernel::Auto ? q8::best_kernel() : opt.kernel);
}

// ---------------------------------------------------------------- the forward pass
Int8Model::Int8Model(std::vector<Conv> convs, Classifier classifier, q8::Kernel kernel)
    : convs_(std::move(convs)), classifier_(std::move(classifier)), kernel_(kernel) {
    if (!q8::kernel_available(kernel_))
        throw Error(std::string("Int8Model: the ") + q8::kernel_name(kernel_) + " kernel is not available here");
}

std::string Int8Model::extra_repr() const {
    std::string s = std::to_string(convs_.size()) + " int8 convs, int8 dynamic " + classifier_.name + ", kernel=" +
                    q8::kernel_name(kernel_);
    return s;
}

// One image through the chain: x [C][H][W] -> logits [classes]. With
// rows_in_parallel, every conv's rows are shared by the threads (a batch
// smaller than the thread count); otherwise the caller runs one image per thread.
void Int8Model::run_image(const float* x, int64_t H, int64_t W, float* logits, bool rows_in_parallel) {
    // The shapes at this image size, and the bytes of every conv's padded input.
    std::vector<q8::ConvShape> shapes;
    int64_t h = H, w = W, bytes = 0;
    for (const Conv& c : convs_) {
        const q8::ConvShape s{c.weights.C, h, w, c.weights.O, c.weights.kh, c.weights.kw, c.stride, c.pad};
        if (s.Hp() < s.kh || s.Wp() < s.kw || (c.pool && (s.Ho() < 2 || s.Wo() < 2)))
            throw Error("Int8Model: a " + std::to_string(H) + "x" + std::to_string(W) + " image is too small for '" +
                        c.name + "'");
        shapes.push_back(s);
        bytes += s.input_bytes();
        h = c.pool ? s.Ho() / 2 : s.Ho(), w = c.pool ? s.Wo() / 2 : s.Wo();
    }
    const q8::ConvShape& ls = shapes.back();
    thread_local std::vector<uint8_t> inputs_buffer;
    thread_local std::vector<float> features_buffer;
    uint8_t* inputs = scratch(inputs_buffer, bytes);
    float* features = scratch(features_buffer, ls.Ho() * ls.Wo() * ls.O);

    const q8::ConvShape& s0 = shapes.front();
    if (!q8::quantize_image(x, s0.C, H, W, 1.f / convs_.front().in_scale, convs_.front().in_zero, s0.pad, inputs)) {
        std::fill(logits, logits + classifier_.out, std::numeric_limits<float>::quiet_NaN());
        return;
    }
    uint8_t* in = inputs;
    for (size_t k = 0; k < convs_.size(); ++k) {
        const Conv& c = convs_[k];
        const q8::ConvShape& s = shapes[k];
        const int64_t Ho = s.Ho(), Wo = s.Wo(), O = s.O, Op = s.Op(), row = Wo * Op;
        uint8_t* next = in + s.input_bytes();
        const q8::ConvShape* ns = k + 1 < shapes.size() ? &shapes[k + 1] : nullptr;
        if (ns) std::fill(next, next + ns->input_bytes(), static_cast<uint8_t>(c.out_zero));  // border: 0.0
        const int lo = c.relu ? c.out_zero : 0;
        // Where output pixel (y, x) of the next layer's input goes.
        auto at = [&](int64_t y, int64_t xx) { return next + ((y + ns->pad) * ns->Wp() + xx + ns->pad) * ns->Cp(); };
        const int64_t units = c.pool ? Ho / 2 : Ho;
#pragma omp parallel for schedule(static) if (rows_in_parallel && units > 1)
        for (int64_t u = 0; u < units; ++u) {
            if (c.to_float) {
                int32_t* acc = scratch(t_acc, row);
                q8::conv(in, s, c.weights, u, u + 1, acc, kernel_);
                q8::dequantize_row(acc, Wo, O, Op, c.multiplier.data(), c.offset.data(), c.relu,
                                   features + u * Wo * O, O);
            } else if (!c.pool) {
                int32_t* acc = scratch(t_acc, row);
                q8::conv(in, s, c.weights, u, u + 1, acc, kernel_);
                q8::requantize_row(acc, Wo, O, Op, c.multiplier.data(), c.offset.data(), lo, at(u, 0), ns->Cp());
            } else {  // rows 2u and 2u+1, requantized into two rows of bytes, then pooled 2x2
                int32_t* acc = scratch(t_acc, 2 * row);
                uint8_t* q = scratch(t_bytes, 2 * Wo * O);
                q8::conv(in, s, c.weights, 2 * u, 2 * u + 2, acc, kernel_);
                q8::requantize_row(acc, 2 * Wo, O, Op, c.multiplier.data(), c.offset.data(), lo, q, O);
                for (int64_t px = 0; px < Wo / 2; ++px) {
                    const uint8_t *a = q + 2 * px * O, *b = a + O, *d = a + Wo * O, *e = d + O;
                    uint8_t* out = at(u, px);
                    for (int64_t o = 0; o < O; ++o) out[o] = std::max(std::max(a[o], b[o]), std::max(d[o], e[o]));
                }
            }
        }
        in = next;
    }
    // Global average pool (in pixel order, so the same sum on any thread count), then the classifier.
    const int64_t P = ls.Ho() * ls.Wo(), F = classifier_.in;
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

Tensor Int8Model::forward(const Tensor& x) {
    if (x.dim() != 4 || x.size(1) != convs_.front().weights.C)
        throw Error("Int8Model: expected input of shape [N, " + std::to_string(convs_.front().weights.C) +
                    ", H, W], got " + shape_str(x.shape()));
    const int64_t N = x.size(0), H = x.size(2), W = x.size(3), per_image = x.size(1) * H * W;
    Tensor y = Tensor::empty({N, classifier_.out});
    const int threads = omp_get_max_threads();
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
