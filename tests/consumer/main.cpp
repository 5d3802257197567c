// Uses the installed headers and library: a tiny op with a hand-written
// backward, checked by minnow's gradcheck.
#include <minnow.h>

#include <cstdio>

using namespace minnow;

struct CubeBackward : Node {
    Tensor x;
    std::vector<Tensor> backward(const Tensor& dy) override { return {mul(mul(square(x), 3.f), dy)}; }
    const char* name() const override { return "CubeBackward"; }
};

Tensor cube(const Tensor& x) {
    Tensor y = mul(square(x), x).detach();  // y = x^3
    auto node = std::make_shared<CubeBackward>();
    node->x = x.detach();
    return attach(y, node, {x});
}

int main() {
    Tensor x = Tensor::uniform({5}, -1.f, 1.f);
    x.requires_grad_();
    GradcheckResult r = gradcheck([](const std::vector<Tensor>& in) { return cube(in[0]); }, {x});
    std::printf("consumer: gradcheck of a user-written op: %s %s\n", r.ok ? "ok" : "FAILED", r.message.c_str());
    return r.ok ? 0 : 1;
}
