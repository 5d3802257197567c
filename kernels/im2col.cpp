// im2col and col2im (kernels/im2col.h), with a fast path for the "same"
// convolutions of stride 1, whose col rows are flat shifted copies.
#include "kernels/im2col.h"

#include <algorithm>

namespace minnow {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

// The output positions o in [0, n_out) whose input position o*s - p + k lies
// inside [0, n_in): they form the range [*lo, *hi).
//   o*s - p + k >= 0     <=>  o >= ceil((p - k) / s)
//   o*s - p + k <  n_in  <=>  o <  ceil((n_in + p - k) / s)
void valid_range(int64_t k, int64_t s, int64_t p, int64_t n_in, int64_t n_out, int64_t* lo, int64_t* hi) {
    *lo = std::clamp<int64_t>(ceil_div(p - k, s), 0, n_out);
    *hi = std::clamp<int64_t>(ceil_div(n_in + p - k, s), *lo, n_out);
}

// One row (c, i, j) of im2col when the stride is 1 and the output is as wide
// as the input (padding p = (kw - 1) / 2, "same"): then output rows a..b-1
// read input rows a+i-p.. shifted by d = j - p columns, and since rows of
// width W follow each other in memory, the whole block is ONE flat copy
// out[t] = in[t + d]. The few entries that thereby came from the
// neighbouring input row are exactly the padding columns (ow < ow_lo or
// ow >= ow_hi), which are set to 0 afterwards. (Much faster than a copy
// per output row when rows are short: 16 or 8 floats in the reference CNN.)
void im2col_same_row(const float* plane, const ConvGeometry& g, int64_t i, int64_t j, int64_t oh0, int64_t oh1,
                     int64_t oh_lo, int64_t oh_hi, int64_t ow_lo, int64_t ow_hi, float* row) {
    const int64_t W = g.W, a = std::max(oh0, oh_lo), b = std::max(a, std::min(oh1, oh_hi));
    for (int64_t t = 0; t < (a - oh0) * W; ++t) row[t] = 0.f;                   // padding rows above
    for (int64_t t = (b - oh0) * W; t < (oh1 - oh0) * W; ++t) row[t] = 0.f;     // and below
    float* out = row + (a - oh0) * W;
    const float* in = plane + (a - g.p + i) * W;  // the input row that output row a reads
    const int64_t d = j - g.p, n = (b - a) * W;
#pragma omp simd
    for (int64_t t = std::max<int64_t>(0, -d); t < n - std::max<int64_t>(0, d); ++t) out[t] = in[t + d];
    for (int64_t r = 0; r < b - a; ++r) {  // the padding columns of every copied row
        for (int64_t ow = 0; ow < ow_lo; ++ow) out[r * W + ow] = 0.f;
        for (int64_t ow = ow_hi; ow < W; ++ow) out[r * W + ow] = 0.f;
    }
}

// im2col of the band of output rows oh0 <= oh < oh1 of one image x [C, H, W]:

// The adjoint of im2col_same_row: the flat copy becomes a flat add
// in[t + d] += out[t]. The padding entries of the col row are first set to 0
// (the caller's col is scratch), so that adding them into the neighbouring
// input row adds nothing.
void col2im_same_row(float* row, const ConvGeometry& g, int64_t i, int64_t j, int64_t oh0, int64_t oh1,
                     int64_t oh_lo, int64_t oh_hi, int64_t ow_lo, int64_t ow_hi, float* plane) {
    const int64_t W = g.W, a = std::max(oh0, oh_lo), b = std::max(a, std::min(oh1, oh_hi));
    float* in = row + (a - oh0) * W;               // col entries of output rows a..b-1
    float* out = plane + (a - g.p + i) * W;        // the input rows they were copied from
    for (int64_t r = 0; r < b - a; ++r) {
        for (int64_t ow = 0; ow < ow_lo; ++ow) in[r * W + ow] = 0.f;
        for (int64_t ow = ow_hi; ow < W; ++ow) in[r * W + ow] = 0.f;
    }
    const int64_t d = j - g.p, n = (b - a) * W;
#pragma omp simd
    for (int64_t t = std::max<int64_t>(0, -d); t < n - std::max<int64_t>(0, d); ++t) out[t + d] += in[t];
}

// Calls row_fn(c, i, j, row, r) for every row (c, i, j) of col, c0 <= c < c1,
// with r the output positions whose input pixel of tap (i, j) is inside
// the image (the rest read padding).
struct ValidRange {
    int64_t oh_lo, oh_hi, ow_lo, ow_hi;
};
template <class RowFn>
void for_each_row(const ConvGeometry& g, float* col, int64_t ld, int64_t c0, int64_t c1, RowFn row_fn) {
    if (c1 < 0) c1 = g.C;
    for (int64_t c = c0; c < c1; ++c)
        for (int64_t i = 0; i < g.kh; ++i)
            for (int64_t j = 0; j < g.kw; ++j) {
                ValidRange r;
                valid_range(i, g.s, g.p, g.H, g.Ho, &r.oh_lo, &r.oh_hi);
                valid_range(j, g.s, g.p, g.W, g.Wo, &r.ow_lo, &r.ow_hi);
                row_fn(c, i, j, col + ((c * g.kh + i) * g.kw + j) * ld, r);
            }
}

}  // namespace

void im2col(const float* x, const ConvGeometry& g, int64_t oh0, int64_t oh1, float* col, int64_t ld, int64_t c0,
            int64_t c1) {
    for_each_row(g, col, ld, c0, c1, [&](int64_t c, int64_t i, int64_t j, float* row, const ValidRange& r) {
        if (g.s == 1 && g.Wo == g.W) {  // the common 3x3, stride 1, padding 1 case, see above
            im2col_same_row(x + c * g.H * g.W, g, i, j, oh0, oh1, r.oh_lo, r.oh_hi, r.ow_lo, r.ow_hi, row);
            return;
        }
        for (int64_t oh = oh0; oh < oh1; ++oh) {
            float* out = row + (oh - oh0) * g.Wo;
            if (oh < r.oh_lo || oh >= r.oh_hi) {  // the whole row is padding
                for (int64_t ow = 0; ow < g.Wo; ++ow) out[ow] = 0.f;
                continue;
            }
            const float* in = x + (c * g.H + oh * g.s - g.p + i) * g.W;
            for (int64_t ow = 0; ow < r.ow_lo; ++ow) out[ow] = 0.f;  // left padding
#pragma omp simd
            for (int64_t ow = r.ow_lo; ow < r.ow_hi; ++ow) out[ow] = in[ow * g.s - g.p + j];
            for (int64_t ow = r.ow_hi; ow < g.Wo; ++ow) out[ow] = 0.f;  // right padding
        }
    });
}

void col2im(float* col, const ConvGeometry& g, int64_t oh0, int64_t oh1, float* dx, int64_t ld, int64_t c0,
            int64_t c1) {
    for_each_row(g, col, ld, c0, c1, [&](int64_t c, int64_t i, int64_t j, float* row, const ValidRange& r) {
        if (g.s == 1 && g.Wo == g.W) {
            col2im_same_row(row, g, i, j, oh0, oh1, r.oh_lo, r.oh_hi, r.ow_lo, r.ow_hi, dx + c * g.H * g.W);
            return;
        }
        for (int64_t oh = std::max(oh0, r.oh_lo); oh < std::min(oh1, r.oh_hi); ++oh) {
            float* out = dx + (c * g.H + oh * g.s - g.p + i) * g.W;
            const float* in = row + (oh - oh0) * g.Wo;
#pragma omp simd
            for (int64_t ow = r.ow_lo; ow < r.ow_hi; ++ow) out[ow * g.s - g.p + j] += in[ow];
        }
    });
}

}  // namespace minnow
