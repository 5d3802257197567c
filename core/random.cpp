#include "core/random.h"

#include <cmath>
#include <cstring>
#include <numeric>
#include <utility>

#include "core/error.h"

namespace minnow {

static uint64_t splitmix64(uint64_t& x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void Generator::manual_seed(uint64_t seed) {
    for (auto& w : s_) w = splitmix64(seed);
    has_spare_ = false;
}

uint64_t Generator::next_u64() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
}

float Generator::uniform() { return static_cast<float>(next_u64() >> 40) * 0x1.0p-24f; }

uint64_t Generator::randint(uint64_t n) {
    if (n == 0) throw Error("Generator::randint: the range [0, 0) is empty");
    // Rejection sampling so every value is equally likely.
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = next_u64(); while (x >= limit);
    return x % n;
}

std::vector<int64_t> Generator::permutation(int64_t n) {
    std::vector<int64_t> order(static_cast<size_t>(n > 0 ? n : 0));
    std::iota(order.begin(), order.end(), 0);
    for (int64_t i = n - 1; i > 0; --i)
        std::swap(order[static_cast<size_t>(i)], order[randint(static_cast<uint64_t>(i + 1))]);
    return order;
}

float Generator::normal() {
    if (has_spare_) {
        has_spare_ = false;
        return spare_;
    }
    // Box-Muller on (0, 1] x [0, 1) so log never sees zero; computed in double.
    const double u1 = 1.0 - static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
    const double u2 = static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double a = 2.0 * M_PI * u2;
    spare_ = static_cast<float>(r * std::sin(a));
    has_spare_ = true;
    return static_cast<float>(r * std::cos(a));
}

Generator::State Generator::state() const {
    uint32_t spare_bits;
    std::memcpy(&spare_bits, &spare_, sizeof spare_bits);
    const uint64_t extra = has_spare_ ? (uint64_t{1} << 32) | spare_bits : 0;
    return {s_[0], s_[1], s_[2], s_[3], extra};
}

void Generator::set_state(const State& st) {
    for (int i = 0; i < 4; ++i) s_[i] = st[i];
    has_spare_ = (st[4] >> 32) != 0;
    const uint32_t spare_bits = static_cast<uint32_t>(st[4]);
    std::memcpy(&spare_, &spare_bits, sizeof spare_);
}

Generator& default_generator() {
    static Generator gen;
    return gen;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

}  // namespace minnow
