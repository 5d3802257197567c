// Fuzz target: arbitrary bytes as a training checkpoint, read as --resume
// reads one: the safetensors file, its metadata (TrainingCheckpoint::from_file),
// then resume into a small model with the optimizer and schedule the file's
// metadata names (SGD, Adam or AdamW; MultiStepLR, CosineAnnealingLR or
// OneCycleLR; SGD and MultiStepLR for any other name, so a wrong type is
// refused too), and one training step from there. The model, Sequential
// "0".."5" = Conv2d(1, 2, 3, padding 1), BatchNorm2d(2), ReLU,
// AdaptiveAvgPool2d(1), Flatten, Linear(2, 3), is what tests/fuzz/make_seeds.py
// writes checkpoints of.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/parallel.h"
#include "core/random.h"
#include "core/safetensors.h"
#include "layers/activation.h"
#include "layers/batchnorm.h"
#include "layers/conv2d.h"
#include "layers/flatten.h"
#include "layers/linear.h"
#include "layers/module.h"
#include "layers/pooling.h"
#include "optim/adam.h"
#include "optim/lr_scheduler.h"
#include "optim/sgd.h"
#include "train/checkpoint.h"
#include "train/step.h"

using namespace minnow;

namespace {
std::string meta_or(const SafetensorsFile& f, const std::string& key) {
    auto it = f.metadata.find(key);
    return it == f.metadata.end() ? "" : it->second;
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    set_num_threads(1);  // the fuzzer is one job on a shared machine
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const SafetensorsFile f = parse_safetensors(data, size, "fuzz-input");
        const TrainingCheckpoint ck = TrainingCheckpoint::from_file(f);

        manual_seed(1);
        Sequential model(std::vector<std::shared_ptr<Module>>{
            std::make_shared<Conv2d>(1, 2, 3, 1, 1), std::make_shared<BatchNorm2d>(2), std::make_shared<ReLU>(),
            std::make_shared<AdaptiveAvgPool2d>(1), std::make_shared<Flatten>(), std::make_shared<Linear>(2, 3)});
        std::unique_ptr<Optimizer> opt;
        const std::string opt_type = meta_or(f, "optim.type");
        if (opt_type == "Adam") opt = std::make_unique<Adam>(model.named_parameters(), AdamOptions(0.01));
        else if (opt_type == "AdamW") opt = std::make_unique<AdamW>(model.named_parameters(), AdamWOptions(0.01));
        else {
            SGDOptions so(0.1);
            so.momentum = 0.9;
            opt = std::make_unique<SGD>(model.named_parameters(), so);
        }
        std::unique_ptr<LRScheduler> sched;
        const std::string sched_type = meta_or(f, "lr_scheduler.type");
        if (sched_type == "CosineAnnealingLR") sched = std::make_unique<CosineAnnealingLR>(*opt, 4);
        else if (sched_type == "OneCycleLR") sched = std::make_unique<OneCycleLR>(*opt, 0.1, 8);
        else sched = std::make_unique<MultiStepLR>(*opt, std::vector<int64_t>{1, 2}, 0.5);

        const TrainState state = ck.resume(model, *opt, sched.get());
        if (state.epochs_done < 0 || state.step < 0 || default_generator().state() != ck.rng) __builtin_trap();

        Batch b;
        b.images = Tensor::normal({2, 1, 4, 4}, 0.f, 1.f);
        b.labels = Tensor::from_vector({0.f, 2.f}, {2});
        train_step(model, *opt, b);
        sched->step();
    } catch (const Error&) {
        // refused with a message: fine
    }
    return 0;
}
