#include "layers/dropout.h"

#include "core/autograd.h"

namespace minnow {

// y = x * m, with m_i = 1/(1-p) (kept, probability 1-p) or 0 (dropped)
//   =>  dx = dy * m (the same mask, saved from the forward)
struct DropoutBackward : Node {
    Tensor mask;  // the scaled mask m
    std::vector<Tensor> backward(const Tensor& dy) override {
        Tensor dx = Tensor::empty(dy.shape());
        const float* pm = mask.data();
        const float* pd = dy.data();
        float* px = dx.data();
        for (int64_t i = 0; i < dx.numel(); ++i) px[i] = pd[i] * pm[i];
        return {dx};
    }
    void release_saved() override { mask = Tensor(); }
    const char* name() const override { return "DropoutBackward"; }
};

static void check_p(float p) {
    if (!(p >= 0.f && p <= 1.f)) throw Error("Dropout: p must be in [0, 1], got " + std::to_string(p));
}

Tensor dropout(const Tensor& x, float p, bool training, Generator* gen) {
    check_p(p);
    if (!training || p == 0.f) return x;
    Generator& g = gen ? *gen : default_generator();
    const float keep_scale = p < 1.f ? 1.f / (1.f - p) : 0.f;  // p = 1 drops everything
    Tensor mask = Tensor::empty(x.shape());
    Tensor y = Tensor::empty(x.shape());
    float* pm = mask.data();
    float* py = y.data();
    const float* px = x.data();
    for (int64_t i = 0; i < x.numel(); ++i) {  // serial: one stream of random numbers
        pm[i] = g.uniform() < p ? 0.f : keep_scale;
        py[i] = px[i] * pm[i];
    }
    if (!any_requires_grad({x})) return y;
    auto node = std::make_shared<DropoutBackward>();
    node->mask = mask;
    return attach(y, node, {x});
}

Dropout::Dropout(float p, Generator* gen) : p(p), gen_(gen) { check_p(p); }

}  // namespace minnow
