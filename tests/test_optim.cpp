// SGD, Adam and AdamW against PyTorch's trajectories (tests/fixtures/optim.safetensors),
// checkpoints of their state, parameter groups, and the gradient utilities.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/random.h"
#include "core/safetensors.h"
#include "layers/module.h"
#include "optim/adam.h"
#include "optim/grad_utils.h"
#include "optim/optimizer.h"
#include "optim/sgd.h"
#include "test_helpers.h"

using namespace minnow;
using minnow::testing::check_close;
using minnow::testing::T;

namespace {

const SafetensorsFile& fixture() {
    static const SafetensorsFile f =
        load_safetensors(minnow::testing::source_path("tests/fixtures/optim.safetensors"));
    return f;
}

// The fixture's configuration of every case: {"sgd": {"optimizer": "SGD", "lr": 0.1, ...}, ...}.
nlohmann::json fixture_config() { return nlohmann::json::parse(fixture().metadata.at("config")); }

// Row k of a stacked tensor, as a new tensor of shape t.shape()[1:].
Tensor row(const Tensor& t, int64_t k) {
    const Shape shape(t.shape().begin() + 1, t.shape().end());
    const int64_t n = shape_numel(shape);
    std::vector<float> v(t.data() + k * n, t.data() + (k + 1) * n);
    return Tensor::from_vector(v, shape);
}

Tensor param(const Tensor& init) { return init.clone().detach().requires_grad_(); }

// The fixture's two parameters, named as in its tensors.
NamedTensors fresh_params() {
    return {{"p1", param(fixture().get("init.p1"))}, {"p2", param(fixture().get("init.p2"))}};
}

// The optimizer a fixture case describes, over `params`.
std::unique_ptr<Optimizer> make_optimizer(const nlohmann::json& c, const NamedTensors& params) {
    const std::string type = c.at("optimizer");
    if (type == "SGD") {
        SGDOptions o(c.at("lr").get<double>());
        o.momentum = c.at("momentum");
        o.dampening = c.at("dampening");
        o.weight_decay = c.at("weight_decay");
        o.nesterov = c.at("nesterov");
        return std::make_unique<SGD>(params, o);
    }
    REQUIRE((type == "Adam" || type == "AdamW"));
    REQUIRE_FALSE(c.at("amsgrad").get<bool>());
    AdamWOptions o(c.at("lr").get<double>());
    o.beta1 = c.at("betas").at(0);
    o.beta2 = c.at("betas").at(1);
    o.eps = c.at("eps");
    o.weight_decay = c.at("weight_decay");
    if (type == "Adam") return std::make_unique<Adam>(params, o);
    return std::make_unique<AdamW>(params, o);
}

// Sets the fixture's k-th gradients (a copy each).
void set_grads(const NamedTensors& params, int64_t k) {
    for (const auto& [name, p] : params) const_cast<Tensor&>(p).set_grad(row(fixture().get("grad." + name), k));
}

bool identical(const Tensor& a, const Tensor& b) { return a.shape() == b.shape() && a.to_vector() == b.to_vector(); }

// PyTorch's value after step k+1 of case `c`, to float precision. With FMA
// instructions the loops round exactly as PyTorch's kernels do (see
// optim/kernel_utils.h), so there the values must be the very same floats.
void check_step(const std::string& c, const NamedTensors& params, int64_t k) {
    for (const auto& [name, p] : params) {
        const std::string what = c + "." + name + " after step " + std::to_string(k + 1);
        const Tensor expected = row(fixture().get(c + "." + name), k);
        check_close(p, expected, 2e-6, 1e-7, what);
#ifdef __FMA__
        CHECK_MESSAGE(identical(p, expected), what << " is not bit-identical to PyTorch's");
#endif
    }
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

#define CHECK_ERROR_CONTAINS(expr, text)                                              \
    do {                                                                              \
        const std::string msg_ = error_of([&] { expr; });                             \
        CHECK_MESSAGE(msg_.find(text) != std::string::npos, "error was: " << msg_); \
    } while (0)

// A unique temporary path for this process and test.
std::string temp_path(const std::string& tag) {
    return (std::filesystem::temp_directory_path() /
            ("minnow_optim_" + std::to_string(::getpid()) + "_" + tag + ".safetensors"))
        .string();
}

}  // namespace

TEST_CASE("optim: every SGD, Adam and AdamW case matches PyTorch at every step") {
    const nlohmann::json config = fixture_config();
    int cases = 0;
    for (const auto& e : fixture().tensors) {  // no case in the file is left out
        const std::string& n = e.name;
        if (n.size() > 3 && n.compare(n.size() - 3, 3, ".p1") == 0 && n != "init.p1" && n != "grad.p1")
            CHECK_MESSAGE(config.contains(n.substr(0, n.size() - 3)), n << " has no config");
    }
    for (const auto& [c, cfg] : config.items()) {
        CAPTURE(c);
        NamedTensors params = fresh_params();
        auto opt = make_optimizer(cfg, params);
        CHECK(std::string(opt->name()) == cfg.at("optimizer").get<std::string>());
        for (int64_t k = 0; k < 5; ++k) {
            set_grads(params, k);
            opt->step();
            check_step(c, params, k);
        }
        ++cases;
    }
    CHECK(cases == 9);
}

TEST_CASE("optim: state saved after 3 steps and loaded into a fresh optimizer continues exactly") {
    const nlohmann::json config = fixture_config();
    for (const std::string c : {"sgd_momentum_dampening", "sgd_nesterov", "sgd_momentum_wd_1e-1", "adam_wd_1e-1",
                                "adamw_wd_1e-1"}) {
        CAPTURE(c);
        // uninterrupted
        NamedTensors straight = fresh_params();
        auto opt = make_optimizer(config.at(c), straight);
        for (int64_t k = 0; k < 5; ++k) {
            set_grads(straight, k);
            opt->step();
        }

        // 3 steps, then a checkpoint file with the parameters and the optimizer state
        NamedTensors first = fresh_params();
        auto opt1 = make_optimizer(config.at(c), first);
        for (int64_t k = 0; k < 3; ++k) {
            set_grads(first, k);
            opt1->step();
        }
        SafetensorsFile state = opt1->state_dict();
        std::vector<TensorEntry> entries;
        for (const auto& [name, p] : first) entries.push_back({name, p, DType::F32});
        for (const auto& e : state.tensors) entries.push_back(e);
        const std::string path = temp_path(c);
        save_safetensors(path, entries, state.metadata);
        const SafetensorsFile file = load_safetensors(path);
        std::remove(path.c_str());

        // a fresh run: parameters from the file, an optimizer made with another lr
        NamedTensors resumed = {{"p1", param(file.get("p1"))}, {"p2", param(file.get("p2"))}};
        nlohmann::json other = config.at(c);
        other["lr"] = 123.0;
        auto opt2 = make_optimizer(other, resumed);
        opt2->load_state_dict(file);
        CHECK(opt2->param_groups()[0].lr == config.at(c).at("lr").get<double>());
        const ParamState* s = opt2->state(resumed[0].second);
        REQUIRE(s);
        CHECK(s->step == 3);
        for (int64_t k = 3; k < 5; ++k) {
            set_grads(resumed, k);
            opt2->step();
        }
        for (size_t i = 0; i < 2; ++i) {
            CHECK_MESSAGE(identical(resumed[i].second, straight[i].second), resumed[i].first);
            check_step(c, resumed, 4);
        }
    }
}

TEST_CASE("optim: the checkpoint names follow the parameters and hold exact hyperparameters") {
    NamedTensors params = fresh_params();
    AdamOptions o(0.1);  // 0.1 is not a float: the metadata must keep the double
    Adam opt(params, o);
    set_grads(params, 0);
    opt.step();
    const SafetensorsFile s = opt.state_dict();
    std::vector<std::string> names;
    for (const auto& e : s.tensors) names.push_back(e.name);
    CHECK(names == std::vector<std::string>{"optim.state.p1.exp_avg", "optim.state.p1.exp_avg_sq",
                                            "optim.state.p2.exp_avg", "optim.state.p2.exp_avg_sq"});
    CHECK(s.metadata.at("optim.type") == "Adam");
    CHECK(s.metadata.at("optim.state.p1.step") == "1");
    const auto groups = nlohmann::json::parse(s.metadata.at("optim.param_groups"));
    CHECK(groups.at(0).at("lr").get<double>() == 0.1);
    CHECK(groups.at(0).at("params") == nlohmann::json({"p1", "p2"}));

    // bare tensors are named by their index over all groups, as in PyTorch
    Tensor a = param(T({1, 2}, {2})), b = param(T({3}, {1}));
    SGDOptions so(0.1);
    so.momentum = 0.9;
    SGD sgd(std::vector<ParamGroupSpec>{ParamGroupSpec({a}), ParamGroupSpec({b})}, so);
    a.set_grad(T({1, 1}, {2}));
    b.set_grad(T({1}, {1}));
    sgd.step();
    const SafetensorsFile s2 = sgd.state_dict("opt2.");
    REQUIRE(s2.tensors.size() == 2);
    CHECK(s2.tensors[0].name == "opt2.state.0.momentum_buffer");
    CHECK(s2.tensors[1].name == "opt2.state.1.momentum_buffer");
    CHECK(s2.metadata.count("opt2.state.1.step") == 1);
}

TEST_CASE("optim: param groups have their own lr and weight decay") {
    NamedTensors params = fresh_params();
    // p1 with weight decay 0.1, p2 with the default 0: each must follow its own fixture
    ParamGroupSpec g1(NamedTensors{params[0]}), g2(NamedTensors{params[1]});
    g1.weight_decay = 0.1;
    SGDOptions o(0.1);
    o.momentum = 0.9;
    SGD opt({g1, g2}, o);
    REQUIRE(opt.param_groups().size() == 2);
    CHECK(opt.param_groups()[0].weight_decay == 0.1);
    CHECK(opt.param_groups()[1].weight_decay == 0.0);
    CHECK(opt.param_groups()[1].momentum == 0.9);
    for (int64_t k = 0; k < 5; ++k) {
        set_grads(params, k);
        opt.step();
        check_close(params[0].second, row(fixture().get("sgd_momentum_wd_1e-1.p1"), k), 2e-6, 1e-7, "p1");
        check_close(params[1].second, row(fixture().get("sgd_momentum.p2"), k), 2e-6, 1e-7, "p2");
    }

    // a group's own lr: plain SGD, p -= lr * g
    Tensor a = param(T({1, 2}, {2})), b = param(T({1, 2}, {2}));
    ParamGroupSpec slow({b});
    slow.lr = 0.01;
    SGD opt2({ParamGroupSpec({a}), slow}, SGDOptions(0.5));
    a.set_grad(T({1, -1}, {2}));
    b.set_grad(T({1, -1}, {2}));
    opt2.step();
    CHECK(a.to_vector() == std::vector<float>{1 - 0.5f, 2 + 0.5f});
    CHECK(b.to_vector() == std::vector<float>{1 - 0.01f, 2 + 0.01f});
}

namespace {
// Parameters of the shapes a CNN has: a conv weight, its bias, BatchNorm's weight and bias.
struct ToyNet : Module {
    ToyNet() {
        register_parameter("weight", Tensor::zeros({4, 3, 3, 3}));
        register_parameter("bias", Tensor::zeros({4}));
        register_parameter("bn_weight", Tensor::ones({4}));
        register_parameter("bn_bias", Tensor::zeros({4}));
        register_parameter("fc", Tensor::zeros({10, 4}));
    }
    Tensor forward(const Tensor& x) override { return x; }
    std::string type_name() const override { return "ToyNet"; }
};
}  // namespace

TEST_CASE("optim: no weight decay for biases and normalisation weights") {
    ToyNet net;
    auto groups = param_groups_no_decay_for_norm_and_bias(net.named_parameters(), 5e-4);
    SGDOptions o(0.1);
    o.momentum = 0.9;
    o.weight_decay = 1.0;  // the default, which both groups override
    SGD opt(groups, o);
    const auto& pg = opt.param_groups();
    REQUIRE(pg.size() == 2);
    CHECK(pg[0].names == std::vector<std::string>{"weight", "fc"});
    CHECK(pg[0].weight_decay == 5e-4);
    CHECK(pg[1].names == std::vector<std::string>{"bias", "bn_weight", "bn_bias"});
    CHECK(pg[1].weight_decay == 0.0);
    CHECK(pg[1].lr == 0.1);

    // by default weight decay applies to every parameter, as torch.optim.SGD does
    SGD all(net.named_parameters(), o);
    REQUIRE(all.param_groups().size() == 1);
    CHECK(all.param_groups()[0].params.size() == 5);
    CHECK(all.param_groups()[0].weight_decay == 1.0);
}

TEST_CASE("optim: parameters without a gradient are skipped") {
    // Adam: p2 gets no gradient at first, so it has no state and does not move;
    // its first update later is a first step (bias correction with t = 1).
    NamedTensors params = fresh_params();
    Adam opt(params, AdamOptions(0.01));
    Tensor p1 = params[0].second, p2 = params[1].second;
    const Tensor p2_before = p2.clone();
    p1.set_grad(row(fixture().get("grad.p1"), 0));
    opt.step();
    CHECK(identical(p2, p2_before));
    CHECK(opt.state(p2) == nullptr);
    check_close(p1, row(fixture().get("adam.p1"), 0), 2e-6, 1e-7, "p1");

    p1.set_grad(row(fixture().get("grad.p1"), 1));
    p2.set_grad(row(fixture().get("grad.p2"), 0));
    opt.step();
    CHECK(opt.state(p1)->step == 2);
    CHECK(opt.state(p2)->step == 1);
    check_close(p1, row(fixture().get("adam.p1"), 1), 2e-6, 1e-7, "p1");
    check_close(p2, row(fixture().get("adam.p2"), 0), 2e-6, 1e-7, "p2");

    // zero_grad drops the gradients: the next step changes nothing
    opt.zero_grad();
    CHECK_FALSE(p1.grad().defined());
    const Tensor p1_before = p1.clone();
    opt.step();
    CHECK(identical(p1, p1_before));
    CHECK(opt.state(p1)->step == 2);

    // SGD with momentum: no buffer for a parameter that never had a gradient
    NamedTensors q = fresh_params();
    SGDOptions o(0.1);
    o.momentum = 0.9;
    SGD sgd(q, o);
    Tensor(q[0].second).set_grad(row(fixture().get("grad.p1"), 0));
    sgd.step();
    CHECK(sgd.state(q[0].second)->momentum_buffer.defined());
    CHECK(sgd.state(q[1].second) == nullptr);
    CHECK(sgd.state_dict().tensors.size() == 1);
}

TEST_CASE("optim: large tensors (the parallel loops) follow the same rule") {
    const int64_t n = (1 << 15) + 77;
    Generator gen(7);
    Tensor p = Tensor::normal({n}, 0, 1, &gen).requires_grad_();
    std::vector<float> ref = p.to_vector(), buf(n);
    SGDOptions o(0.05);
    o.momentum = 0.9;
    o.nesterov = true;
    o.weight_decay = 1e-3;
    SGD opt(std::vector<Tensor>{p}, o);
    for (int step = 0; step < 2; ++step) {
        Tensor g = Tensor::normal({n}, 0, 1, &gen);
        p.set_grad(g);
        opt.step();
        for (int64_t i = 0; i < n; ++i) {
            float d = g.data()[i] + 1e-3f * ref[i];
            buf[i] = step == 0 ? d : 0.9f * buf[i] + 1.f * d;
            d = d + 0.9f * buf[i];
            ref[i] -= 0.05f * d;
        }
    }
    check_close(p, Tensor::from_vector(ref, {n}), 1e-6, 1e-7, "SGD nesterov");
}

TEST_CASE("optim: invalid configurations are errors") {
    Tensor a = param(T({1, 2}, {2}));
    CHECK_ERROR_CONTAINS(SGD(std::vector<Tensor>{}, SGDOptions(0.1)), "empty parameter list");
    CHECK_ERROR_CONTAINS(SGD(std::vector<Tensor>{a}, SGDOptions(-1)), "invalid learning rate");
    SGDOptions nest(0.1);
    nest.nesterov = true;
    CHECK_ERROR_CONTAINS(SGD(std::vector<Tensor>{a}, nest), "nesterov momentum requires a momentum");
    CHECK_ERROR_CONTAINS(SGD(std::vector<Tensor>({a, a}), SGDOptions(0.1)), "appears more than once");
    ParamGroupSpec neg({a});
    neg.weight_decay = -1;
    CHECK_ERROR_CONTAINS(SGD({neg}, SGDOptions(0.1)), "invalid weight_decay");
    AdamOptions beta;
    beta.beta2 = 1.0;
    CHECK_ERROR_CONTAINS(Adam(std::vector<Tensor>{a}, beta), "Adam: invalid beta parameter at index 1");
    Tensor not_leaf = mul(a, 2.f);
    CHECK_ERROR_CONTAINS(AdamW(std::vector<Tensor>{not_leaf}, AdamWOptions()), "non-leaf");
    CHECK_ERROR_CONTAINS(SGD(NamedTensors({{"x", a}, {"x", param(T({1}, {1}))}}), SGDOptions(0.1)),
                         "two parameters are called 'x'");
}

TEST_CASE("optim: loading a state that does not fit is an error that names the problem") {
    NamedTensors params = fresh_params();
    SGDOptions o(0.1);
    o.momentum = 0.9;
    SGD sgd(params, o);
    set_grads(params, 0);
    sgd.step();
    const SafetensorsFile good = sgd.state_dict();

    // wrong shapes
    NamedTensors other = {{"p1", param(Tensor::zeros({4, 3}))}, {"p2", param(Tensor::zeros({5}))}};
    SGD sgd2(other, o);
    CHECK_ERROR_CONTAINS(sgd2.load_state_dict(good),
                         "optim.state.p1.momentum_buffer has shape [3, 4] but the parameter has shape [4, 3]");
    CHECK(sgd2.state(other[1].second) == nullptr);  // nothing was loaded

    // other parameter names
    NamedTensors renamed = {{"p1", param(Tensor::zeros({3, 4}))}, {"q", param(Tensor::zeros({5}))}};
    SGD sgd3(renamed, o);
    CHECK_ERROR_CONTAINS(sgd3.load_state_dict(good), "param group 0: parameter 1 is 'p2' in the file but 'q' here");

    // a missing buffer (Adam needs both moments), and a missing state altogether
    NamedTensors ap = fresh_params();
    Adam adam(ap, AdamOptions(0.01));
    set_grads(ap, 0);
    adam.step();
    SafetensorsFile partial = adam.state_dict();
    partial.tensors.erase(partial.tensors.begin() + 1);  // optim.state.p1.exp_avg_sq
    NamedTensors ap2 = fresh_params();
    Adam adam2(ap2, AdamOptions(0.5));
    CHECK_ERROR_CONTAINS(adam2.load_state_dict(partial), "optim.state.p1.exp_avg_sq is missing");
    CHECK(adam2.param_groups()[0].lr == 0.5);  // untouched by the failed load
    CHECK_ERROR_CONTAINS(adam2.load_state_dict(SafetensorsFile{}), "no optimizer state");
    CHECK_ERROR_CONTAINS(adam2.load_state_dict(good), "saved by SGD and cannot be loaded into Adam");

    // an unexpected tensor
    SafetensorsFile extra = good;
    extra.tensors.push_back({"optim.state.p9.momentum_buffer", Tensor::zeros({1}), DType::F32});
    CHECK_ERROR_CONTAINS(sgd2.load_state_dict(extra), "optim.state.p9.momentum_buffer is unexpected");

    // another prefix finds nothing; the right one works
    CHECK_ERROR_CONTAINS(sgd.load_state_dict(good, "opt2."), "no optimizer state");
    SGD sgd4(fresh_params(), o);
    sgd4.load_state_dict(good);
}

TEST_CASE("optim: gradient norms and clip_grad_norm_ against hand values") {
    Tensor a = param(T({0, 0}, {2})), b = param(T({0}, {1})), c = param(T({0}, {1}));
    const std::vector<Tensor> ps{a, b, c};
    const NamedTensors named{{"a", a}, {"b", b}, {"c", c}};
    a.set_grad(T({3, 4}, {2}));
    b.set_grad(T({12}, {1}));  // c has no gradient
    CHECK(global_grad_norm(ps) == 13.0);
    const auto norms = per_parameter_grad_norms(named);
    REQUIRE(norms.size() == 2);
    CHECK(norms[0] == std::make_pair(std::string("a"), 5.0));
    CHECK(norms[1] == std::make_pair(std::string("b"), 12.0));

    // below the limit: returned, untouched
    CHECK(clip_grad_norm_(ps, 26.0) == 13.0);
    CHECK(a.grad().to_vector() == std::vector<float>{3, 4});

    // above: scaled by max_norm / (total + 1e-6)
    CHECK(clip_grad_norm_(ps, 6.5) == 13.0);
    const float coef = static_cast<float>(6.5 / (13.0 + 1e-6));
    CHECK(a.grad().to_vector() == std::vector<float>{3 * coef, 4 * coef});
    CHECK(b.grad().to_vector() == std::vector<float>{12 * coef});
    CHECK(std::fabs(global_grad_norm(ps) - 6.5) < 1e-5);

    std::string bad;
    CHECK(all_finite_grads(named, &bad));
    b.grad().data()[0] = NAN;
    CHECK_FALSE(all_finite_grads(named, &bad));
    CHECK(bad == "b");
    b.grad().data()[0] = 1;
    a.grad().data()[1] = -INFINITY;
    CHECK_FALSE(all_finite_grads(named, &bad));
    CHECK(bad == "a");
    CHECK(std::isinf(global_grad_norm(ps)));
}
