// minnow/core/random.h: a small seedable random generator.
//
// xoshiro256** (Blackman and Vigna), seeded through splitmix64. Its whole
// state is four 64-bit words, so a training checkpoint can save and restore it
// exactly and a resumed run draws the same numbers as an uninterrupted one.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace minnow {

class Generator {
public:
    explicit Generator(uint64_t seed = 0x5eed) { manual_seed(seed); }
    void manual_seed(uint64_t seed);

    uint64_t next_u64();
    // Uniform in [0, 1) with 24 random bits (every value is a float exactly).
    float uniform();
    // Uniform integer in [0, n); n must be at least 1 (an Error otherwise).
    uint64_t randint(uint64_t n);
    // Standard normal (Box-Muller; the spare value is kept for the next call).
    float normal();

    using State = std::array<uint64_t, 5>;  // 4 words + the cached normal (bits)
    State state() const;
    void set_state(const State& s);

    // 0, 1, ..., n-1 in a random order (Fisher-Yates): for i = n-1 down to 1,
    // entry i is swapped with entry randint(i + 1). The DataLoader's shuffle
    // and split_validation are specified by these draws.
    std::vector<int64_t> permutation(int64_t n);

private:
    std::array<uint64_t, 4> s_{};
    bool has_spare_ = false;
    float spare_ = 0.f;
};

// The generator used when a function is not given one explicitly.
Generator& default_generator();
// Seeds the default generator (like torch.manual_seed).
void manual_seed(uint64_t seed);

}  // namespace minnow
