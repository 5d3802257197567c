// The page's WebAssembly module: web/panels.h, bound to JavaScript with
// embind. One PageData per page; every function returns JSON text, and an
// Error (a bad argument, a missing file) reaches JavaScript as a thrown Error
// with minnow's message.
#include <emscripten/bind.h>
#include <emscripten/val.h>

#include <exception>
#include <memory>

#include "web/panels.h"

using namespace minnow::web;

namespace {

PageData& page() {
    static PageData d;
    return d;
}

template <class F>
auto or_throw(F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (const std::exception& e) {
        emscripten::val::global("Error").new_(std::string(e.what())).throw_();
    }
    throw;  // not reached: throw_() does not return
}

// Trainer keeps a reference to the page's data, so JavaScript constructs it
// without passing the data.
struct PageTrainer {
    std::unique_ptr<Trainer> t;
    PageTrainer(const std::string& norm, int batch_size, double momentum, double lr, double seed) {
        or_throw([&] {
            t = std::make_unique<Trainer>(page(), norm, batch_size, momentum, lr, static_cast<uint64_t>(seed));
            return 0;
        });
    }
    std::string step(int n) { return or_throw([&] { return t->step(n); }); }
    std::string evaluate(int images) { return or_throw([&] { return t->evaluate(images); }); }
};

}  // namespace

EMSCRIPTEN_BINDINGS(minnow_page) {
    using emscripten::function;
    function("load_data", +[](std::string dir) { return or_throw([&] { return load_data(page(), dir); }); });
    function("pool_image", +[](int i) { return or_throw([&] { return pool_image(page(), i); }); });
    function("batch_stats", +[](int b, int batches, double seed) {
        return or_throw([&] { return batch_stats(page(), b, batches, static_cast<uint64_t>(seed)); });
    });
    function("probe", +[](int b, int draws, double seed) {
        return or_throw([&] { return probe(page(), b, draws, static_cast<uint64_t>(seed)); });
    });
    function("independence", +[](int i, int b, double seed_a, double seed_b) {
        return or_throw([&] {
            return independence(page(), i, b, static_cast<uint64_t>(seed_a), static_cast<uint64_t>(seed_b));
        });
    });
    function("parity_report", +[] { return or_throw([] { return parity_report(); }); });
    emscripten::class_<PageTrainer>("Trainer")
        .constructor<std::string, int, double, double, double>()
        .function("step", &PageTrainer::step)
        .function("evaluate", &PageTrainer::evaluate);
}
