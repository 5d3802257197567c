// Shared test helpers: comparisons with readable failure messages, and the
// paths of fixtures and shared data.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace minnow::testing {

// Max over elements of |a - b| / (atol + rtol |b|); <= 1 means close.
inline void check_close(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-6,
                        const std::string& what = "") {
    REQUIRE_MESSAGE(a.shape() == b.shape(), what << ": shapes " << shape_str(a.shape()) << " vs "
                                                  << shape_str(b.shape()));
    int64_t worst = -1;
    double worst_ratio = 0;
    for (int64_t i = 0; i < a.numel(); ++i) {
        const double x = a.data()[i], y = b.data()[i];
        const double diff = std::fabs(x - y);
        const double ratio = diff == 0 ? 0 : diff / (atol + rtol * std::fabs(y));
        if (!(ratio <= worst_ratio)) {  // also catches NaN
            worst_ratio = std::isnan(ratio) ? INFINITY : ratio;
            worst = i;
        }
    }
    CHECK_MESSAGE(worst_ratio <= 1.0, what << ": element " << worst << " is " << a.data()[worst]
                                           << ", expected " << b.data()[worst] << " (rtol " << rtol
                                           << ", atol " << atol << ")");
}

// The largest |t_i| (0 for an empty tensor), and the largest |a_i - b_i|.
inline double max_abs(const Tensor& t) {
    double m = 0;
    for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::fabs(static_cast<double>(t.data()[i])));
    return m;
}

inline double max_abs_diff(const Tensor& a, const Tensor& b) {
    REQUIRE(a.shape() == b.shape());
    double m = 0;
    for (int64_t i = 0; i < a.numel(); ++i)
        m = std::max(m, std::fabs(static_cast<double>(a.data()[i]) - b.data()[i]));
    return m;
}

// The same shape and the same bits.
inline bool same_bits(const Tensor& a, const Tensor& b) {
    return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(float) * a.numel()) == 0;
}
// The same, except that any NaN equals any NaN (which NaN an operation with
// NaN operands returns depends on the order of its operands).
inline bool same_bits_any_nan(const Tensor& a, const Tensor& b) {
    if (a.shape() != b.shape()) return false;
    for (int64_t i = 0; i < a.numel(); ++i) {
        const float u = a.data()[i], v = b.data()[i];
        if (!(std::isnan(u) && std::isnan(v)) && std::memcmp(&u, &v, sizeof u) != 0) return false;
    }
    return true;
}

inline Tensor T(const std::vector<float>& v, const Shape& s) { return Tensor::from_vector(v, s); }

inline std::string source_path(const std::string& rel) { return std::string(MINNOW_SOURCE_DIR) + "/" + rel; }

// ../shared beside the checkout, or $MINNOW_SHARED.
inline std::string shared_path(const std::string& rel) {
    const char* env = std::getenv("MINNOW_SHARED");
    return std::string(env && *env ? env : MINNOW_SHARED_DIR) + "/" + rel;
}

}  // namespace minnow::testing
