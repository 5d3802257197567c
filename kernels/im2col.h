// minnow/kernels/im2col.h: the im2col matrix of a convolution, and its adjoint.
//
// For x [C, H, W] (one image), a kernel kh x kw, stride s and zero padding p,
// the output is Ho x Wo pixels and row k = (c*kh + i)*kw + j of the im2col
// matrix col [K, P] (K = C*kh*kw, P = Ho*Wo) lists, for every output pixel,
// the input pixel that weight element k multiplies:
//       col[(c*kh + i)*kw + j][oh*Wo + ow] = x[c, oh*s - p + i, ow*s - p + j]   (0 in the padding)
// so the convolution of the image is the GEMM  Y [O, P] = W [O, K] col [K, P]
// (layers/conv2d.cpp). col2im is the adjoint, for the input gradient.
#pragma once

#include <cstdint>

namespace minnow {

// The sizes of one convolution: plain numbers, no tensors.
struct ConvGeometry {
    int64_t N, C, H, W;  // input
    int64_t O, kh, kw;   // weight [O, C, kh, kw]
    int64_t s, p;        // stride, padding
    int64_t Ho, Wo;      // output
    int64_t K() const { return C * kh * kw; }  // rows of col
    int64_t P() const { return Ho * Wo; }      // columns of col
    // A 1x1 kernel with stride 1 and no padding: col is x itself, read as [C, H*W].
    bool pointwise() const { return kh == 1 && kw == 1 && s == 1 && p == 0; }
    // The 3x3 "same" convolution (stride 1, padding 1) of the direct kernels.
    bool same3x3() const { return kh == 3 && kw == 3 && s == 1 && p == 1; }
};

// im2col of the band of output rows oh0 <= oh < oh1 of one image x [C, H, W]:
//   col[(c*kh + i)*kw + j][(oh - oh0)*Wo + ow] = x[c, oh*s - p + i, ow*s - p + j]   (0 in the padding)
// col is [K, (oh1 - oh0) * Wo] with rows `ld` floats apart: ld = (oh1 - oh0) * Wo
// for one image alone, more when images sit side by side in one col.
// Only the rows of channels c0 <= c < c1 are written (all of them by default):
// threads that share one col each fill their own channels' rows.
void im2col(const float* x, const ConvGeometry& g, int64_t oh0, int64_t oh1, float* col, int64_t ld,
            int64_t c0 = 0, int64_t c1 = -1);

// The adjoint of im2col: every entry of col is added back to the pixel it was
// copied from (padding entries are dropped). dx is one image [C, H, W];
// col holds the band of output rows [oh0, oh1), laid out as in im2col (rows
// `ld` floats apart), and is used as scratch (its padding entries are zeroed).
//   dx[c, ih, iw] += col[(c*kh + i)*kw + j][(oh - oh0)*Wo + ow]  for oh*s - p + i = ih, ow*s - p + j = iw
// Only channels c0 <= c < c1 (all by default): the rows of channel c add into
// plane c of dx alone, so threads given disjoint channels never write the same pixel.
void col2im(float* col, const ConvGeometry& g, int64_t oh0, int64_t oh1, float* dx, int64_t ld, int64_t c0 = 0,
            int64_t c1 = -1);

}  // namespace minnow
