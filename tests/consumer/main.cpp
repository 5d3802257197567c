// Uses the installed headers and library: a tiny op with a hand-written
// backward, checked by minnow's gradcheck; then a tiny model trained with the
// library's epoch loop (train/) on synthetic images, checkpointed after its
// first epoch and resumed from there to the same weights.
#include <minnow.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

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

// 32 images of 3x4x4 in 2 classes: class 1 is brighter.
std::shared_ptr<ImageSet> synthetic_images() {
    auto s = std::make_shared<ImageSet>();
    s->n = 32, s->channels = 3, s->height = 4, s->width = 4;
    s->class_names = {"dark", "bright"};
    Generator gen(5);
    for (int64_t i = 0; i < s->n; ++i) {
        s->labels.push_back(static_cast<int>(i % 2));
        for (int64_t p = 0; p < s->image_size(); ++p)
            s->pixels.push_back(static_cast<uint8_t>(gen.randint(128) + 127 * (i % 2)));
    }
    return s;
}

struct Run {
    std::shared_ptr<Module> model;
    std::unique_ptr<SGD> opt;
    std::unique_ptr<MultiStepLR> sched;
    std::unique_ptr<DataLoader> loader;
};

Run make_run(std::shared_ptr<const ImageSet> set) {
    manual_seed(1);
    Run r;
    r.model = std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
        std::make_shared<Flatten>(), std::make_shared<Linear>(48, 2)});
    SGDOptions so(0.1);
    so.momentum = 0.9;
    r.opt = std::make_unique<SGD>(r.model->named_parameters(), so);
    r.sched = std::make_unique<MultiStepLR>(*r.opt, std::vector<int64_t>{1}, 0.1);
    LoaderOptions lo;
    lo.batch_size = 8;
    lo.mean = {0.5f, 0.5f, 0.5f};
    lo.std = {0.25f, 0.25f, 0.25f};
    r.loader = std::make_unique<DataLoader>(set, lo);
    return r;
}

bool same_weights(const Module& a, const Module& b) {
    auto sa = a.state_dict(), sb = b.state_dict();
    if (sa.size() != sb.size()) return false;
    for (size_t i = 0; i < sa.size(); ++i)
        if (std::memcmp(sa[i].tensor.data(), sb[i].tensor.data(), sa[i].tensor.numel() * sizeof(float)) != 0)
            return false;
    return true;
}

int main() {
    Tensor x = Tensor::uniform({5}, -1.f, 1.f);
    x.requires_grad_();
    GradcheckResult r = gradcheck([](const std::vector<Tensor>& in) { return cube(in[0]); }, {x});
    std::printf("consumer: gradcheck of a user-written op: %s %s\n", r.ok ? "ok" : "FAILED", r.message.c_str());
    if (!r.ok) return 1;

    auto set = synthetic_images();
    LoopOptions lo;
    lo.epochs = 2;
    lo.test_set = set;
    lo.test_loader.batch_size = 16;
    lo.test_loader.mean = {0.5f, 0.5f, 0.5f};
    lo.test_loader.std = {0.25f, 0.25f, 0.25f};
    const std::string ckpt = (std::filesystem::temp_directory_path() / "minnow-consumer-ckpt.safetensors").string();

    Run straight = make_run(set);
    EpochTable table;
    const LoopResult full = train_epochs(*straight.model, *straight.opt, straight.sched.get(), *straight.loader, lo,
                                         {}, {&table});

    Run first = make_run(set);
    SaveCheckpoint save(ckpt, *first.model, *first.opt, first.sched.get(), {{"program", "consumer"}});
    LoopOptions one = lo;
    one.epochs = 1;
    train_epochs(*first.model, *first.opt, first.sched.get(), *first.loader, one, {}, {&save});
    Run resumed = make_run(set);
    const TrainState state = TrainingCheckpoint::load(ckpt).resume(*resumed.model, *resumed.opt, resumed.sched.get());
    train_epochs(*resumed.model, *resumed.opt, resumed.sched.get(), *resumed.loader, lo, state);
    std::filesystem::remove(ckpt);

    const bool same = same_weights(*straight.model, *resumed.model);
    const double acc = full.epochs.back().test_acc;
    std::printf("consumer: 2 epochs, %lld steps, accuracy %.1f%%; resumed after epoch 1: %s\n",
                static_cast<long long>(full.state.step), acc, same ? "same weights" : "DIFFERENT weights");
    return same && acc > 50 ? 0 : 1;
}
