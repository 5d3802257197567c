// The int8 convolution (kernels/conv_int8.h): the choice of kernel, the
// packing of the weights, the portable kernel, and the loops around the
// convolution that turn floats into bytes and back.
#include "kernels/conv_int8.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "core/error.h"
#include "kernels/cpu.h"
#include "kernels/per_isa.h"

#if MINNOW_X86
#include <cpuid.h>
#endif

namespace minnow::int8 {

// One output row at each instruction set: conv_int8_{avx512vnni,avxvnni,avx2}.cpp;
// AMX's, which takes a range of rows: conv_int8_amx.cpp.
// requantize_row at level avx512: conv_int8_avx512vnni.cpp.
void requantize_row_avx512(const int32_t* acc, int64_t pixels, int64_t O, int64_t Op, const float* multiplier,
                           const float* offset, const Residual& residual, int lo, uint8_t* out, int64_t out_stride);
void rows_amx(const uint8_t* X, const ConvShape& s, const PackedWeights& w, int64_t oy0, int64_t oy1, int32_t* acc);
void rows_amx_requantize(const uint8_t* X, const ConvShape& s, const PackedWeights& w, int64_t oy0, int64_t oy1,
                         const Requantization& r);
void row_avx512vnni(const uint8_t* X, const ConvShape& s, const PackedWeights& w, int64_t oy, int32_t* acc);
void row_avxvnni(const uint8_t* X, const ConvShape& s, const PackedWeights& w, int64_t oy, int32_t* acc);
void row_avx2(const uint8_t* X, const ConvShape& s, const PackedWeights& w, int64_t oy, int32_t* acc);

namespace {

// AVX512-VNNI is bit 11 of ECX in CPUID leaf 7, subleaf 0; AVX-VNNI bit 4 of
// EAX in leaf 7, subleaf 1; AMX-INT8 bit 25 of EDX in leaf 7, subleaf 0.
// Asked of CPUID itself (not every compiler knows "avxvnni" for
// __builtin_cpu_supports), once: in a virtual machine every
// CPUID is a trip to the hypervisor (asked per row, it took 30% of the time).
// That the OS saves the vector registers is part of levels avx2 and avx512,
// and that Linux lets this process use the AMX tiles part of level amx
// (kernels/cpu.cpp).
bool cpuid_bit(unsigned leaf, unsigned subleaf, int word, int bit) {
#if MINNOW_X86
    unsigned r[4] = {0, 0, 0, 0};
    return __get_cpuid_count(leaf, subleaf, &r[0], &r[1], &r[2], &r[3]) && (r[word] >> bit & 1);
#else
    (void)leaf, (void)subleaf, (void)word, (void)bit;
    return false;
#endif
}
bool cpu_has_avx512_vnni() {
    static const bool has = cpuid_bit(7, 0, 2, 11);
    return has;
}
bool cpu_has_avx_vnni() {
    static const bool has = cpuid_bit(7, 1, 0, 4);
    return has;
}
bool cpu_has_amx_int8() {
    static const bool has = cpuid_bit(7, 0, 3, 25);
    return has;
}

Kernel resolve(Kernel k) {
    if (k == Kernel::Auto) return best_kernel();
    if (!kernel_available(k))
        throw Error(std::string("int8 convolution: the ") + kernel_name(k) + " kernel is not available on this machine");
    return k;
}

// The definition, on the packed weights: any CPU.
void row_portable(const uint8_t* X, const ConvShape& s, const PackedWeights& w, int64_t oy, int32_t* acc) {
    const int64_t groups = s.Cp() / kChannelGroup, Op = s.Op(), taps = s.kh * s.kw;
    for (int64_t ox = 0; ox < s.Wo(); ++ox)
        for (int64_t o = 0; o < Op; ++o) {
            const int8_t* wo = w.values.data() + (o / kOutputBlock) * taps * groups * kChannelGroup * kOutputBlock +
                               (o % kOutputBlock) * kChannelGroup;
            int32_t sum = 0;
            for (int64_t i = 0; i < s.kh; ++i)
                for (int64_t j = 0; j < s.kw; ++j) {
                    const uint8_t* x =
                        X + ((oy * s.stride + i + s.origin()) * s.Wp() + ox * s.stride + j + s.origin()) * s.Cp();
                    const int8_t* wt = wo + (i * s.kw + j) * groups * kChannelGroup * kOutputBlock;
                    for (int64_t c = 0; c < s.Cp(); ++c)
                        sum += static_cast<int32_t>(x[c]) * wt[(c / kChannelGroup) * kChannelGroup * kOutputBlock +
                                                               c % kChannelGroup];
                }
            acc[ox * Op + o] = sum;
        }
}

}  // namespace

bool kernel_available(Kernel k) {
    switch (k) {
        case Kernel::Auto:
        case Kernel::Portable: return true;
        case Kernel::Amx: return isa_supported(Isa::amx) && cpu_has_amx_int8();
        case Kernel::Avx512Vnni: return isa_supported(Isa::avx512) && cpu_has_avx512_vnni();
        case Kernel::AvxVnni: return isa_supported(Isa::avx2) && cpu_has_avx_vnni();
        case Kernel::Avx2: return isa_supported(Isa::avx2);
    }
    return false;
}

Kernel best_kernel() {
    if (isa_active(Isa::amx) && cpu_has_amx_int8()) return Kernel::Amx;
    if (isa_active(Isa::avx512) && cpu_has_avx512_vnni()) return Kernel::Avx512Vnni;
    if (isa_active(Isa::avx2) && cpu_has_avx_vnni()) return Kernel::AvxVnni;
    if (isa_active(Isa::avx2)) return Kernel::Avx2;
    return Kernel::Portable;
}

const char* kernel_name(Kernel k) {
    switch (k) {
        case Kernel::Auto: return kernel_name(best_kernel());
        case Kernel::Amx: return "amx";
        case Kernel::Avx512Vnni: return "avx512_vnni";
        case Kernel::AvxVnni: return "avx_vnni";
        case Kernel::Avx2: return "avx2";
        case Kernel::Portable: return "portable";
    }
    return "?";
}

std::vector<Kernel> available_kernels() {
    std::vector<Kernel> out;
    for (Kernel k : {Kernel::Portable, Kernel::Avx2, Kernel::AvxVnni, Kernel::Avx512Vnni, Kernel::Amx})
        if (kernel_available(k)) out.push_back(k);
    return out;
}

PackedWeights pack_weights(const int8_t* W, int64_t O, int64_t C, int64_t kh, int64_t kw) {
    if (C <= 0 || O <= 0 || kh <= 0 || kw <= 0) throw Error("int8 convolution: a filter with a size below 1");
    const ConvShape s{C, 1, 1, O, kh, kw, 1, 0};
    PackedWeights p{C, O, kh, kw, {}};
    p.values.assign(s.Op() * kh * kw * s.Cp(), 0);
    const int64_t groups = s.Cp() / kChannelGroup, taps = s.kh * s.kw;
    for (int64_t o = 0; o < s.O; ++o)
        for (int64_t c = 0; c < s.C; ++c)
            for (int64_t t = 0; t < taps; ++t) {
                const int8_t v = W[(o * s.C + c) * taps + t];
                if (v < -kWeightMax) throw Error("int8 convolution: a weight of -128 (weights are in [-127, 127])");
                p.values[(((o / kOutputBlock) * taps + t) * groups + c / kChannelGroup) * kChannelGroup * kOutputBlock +
                         (o % kOutputBlock) * kChannelGroup + c % kChannelGroup] = v;
            }
    return p;
}

namespace {

void check_shape(const ConvShape& s, const PackedWeights& w) {
    if (s.C != w.C || s.O != w.O || s.kh != w.kh || s.kw != w.kw)
        throw Error("int8 convolution: the shape does not match the packed filter");
    if (s.H <= 0 || s.W <= 0 || s.stride <= 0 || s.pad < 0 || s.edge() < s.pad || s.H + 2 * s.pad < s.kh ||
        s.W + 2 * s.pad < s.kw)
        throw Error("int8 convolution: the padded input " + std::to_string(s.H + 2 * s.pad) + "x" +
                    std::to_string(s.W + 2 * s.pad) + " is empty or smaller than the kernel " + std::to_string(s.kh) +
                    "x" + std::to_string(s.kw) + " (or the buffer's border is narrower than the padding)");
}

}  // namespace

void conv(const uint8_t* X, const ConvShape& s, const PackedWeights& w, int64_t oy0, int64_t oy1, int32_t* acc,
          Kernel kernel) {
    check_shape(s, w);
    void (*row)(const uint8_t*, const ConvShape&, const PackedWeights&, int64_t, int32_t*) = row_portable;
    switch (resolve(kernel)) {
#if MINNOW_X86  // elsewhere kernel_available() offers the portable row only
        case Kernel::Amx: return rows_amx(X, s, w, oy0, oy1, acc);
        case Kernel::Avx512Vnni: row = row_avx512vnni; break;
        case Kernel::AvxVnni: row = row_avxvnni; break;
        case Kernel::Avx2: row = row_avx2; break;
#endif
        default: break;
    }
    const int64_t row_size = s.Wo() * s.Op();
    for (int64_t oy = oy0; oy < oy1; ++oy) row(X, s, w, oy, acc + (oy - oy0) * row_size);
}

void conv_requantize(const uint8_t* X, const ConvShape& s, const PackedWeights& w, int64_t oy0, int64_t oy1,
                     const Requantization& r, Kernel kernel) {
    kernel = resolve(kernel);
#if MINNOW_X86
    if (kernel == Kernel::Amx) {
        check_shape(s, w);
        return rows_amx_requantize(X, s, w, oy0, oy1, r);
    }
#endif
    thread_local AlignedVector<int32_t> acc_buffer;
    int32_t* acc = scratch(acc_buffer, s.Wo() * s.Op());
    for (int64_t oy = oy0; oy < oy1; ++oy) {
        conv(X, s, w, oy, oy + 1, acc, kernel);
        Residual residual = r.residual;
        if (residual.bytes) residual.bytes += (oy - oy0) * r.residual_row_stride;
        requantize_row(acc, s.Wo(), s.O, s.Op(), r.multiplier, r.offset, residual, r.lo,
                       r.out + (oy - oy0) * r.out_row_stride, r.out_stride);
    }
}

// ---------------------------------------------------------------- around the convolution
namespace {

// v clamped to [lo, 127] (a NaN to lo: never cast to an integer).
MINNOW_LOOP_BODY int clamp_byte(float v, int lo) {
    const float hi = static_cast<float>(kActivationMax);
    return static_cast<int>(v > static_cast<float>(lo) ? (v < hi ? v : hi) : static_cast<float>(lo));
}

// One row of an image's bytes (quantize_image's arithmetic), contiguous.
struct QuantizeRow {
    MINNOW_LOOP_BODY static void run(const float* x, int64_t n, float inv_scale, int zero, uint8_t* out, bool* finite) {
        float check = 0.f;
        for (int64_t i = 0; i < n; ++i) {
            check += x[i] - x[i];
            out[i] = static_cast<uint8_t>(clamp_byte(std::nearbyint(x[i] * inv_scale) + zero, 0));
        }
        *finite = check == 0.f;
    }
};

struct QuantizeImage {
    // Returns whether every value was finite: x - x is 0 for a finite x, NaN otherwise.
    MINNOW_LOOP_BODY static void run(const float* x, int64_t C, int64_t H, int64_t W, float inv_scale, int zero,
                                     int64_t pad, uint8_t* out, bool* finite) {
        const int64_t Cp = round_up(C, kChannelGroup), Wp = W + 2 * pad;
        float check = 0.f;
        for (int64_t h = 0; h < H; ++h) {
            uint8_t* o = out + ((h + pad) * Wp + pad) * Cp;
            for (int64_t c = 0; c < C; ++c) {
                const float* xr = x + (c * H + h) * W;
                for (int64_t w = 0; w < W; ++w) {
                    check += xr[w] - xr[w];
                    o[w * Cp + c] = static_cast<uint8_t>(clamp_byte(std::nearbyint(xr[w] * inv_scale) + zero, 0));
                }
            }
        }
        *finite = check == 0.f;
    }
};

// requantize_row and dequantize_row (conv_int8.h): v, then `store`s it.
// One loop without a residual and one with, each in one pass, so that each
// vectorises as a plain loop.
template <class Store>
MINNOW_LOOP_BODY void for_each_value(const int32_t* acc, int64_t pixels, int64_t O, int64_t Op, const float* m,
                                     const float* b, const Residual& r, Store store) {
    if (!r.bytes) {
        for (int64_t p = 0; p < pixels; ++p)
            for (int64_t o = 0; o < O; ++o) store(p, o, std::fma(static_cast<float>(acc[p * Op + o]), m[o], b[o]));
    } else {
        for (int64_t p = 0; p < pixels; ++p)
            for (int64_t o = 0; o < O; ++o)
                store(p, o,
                      std::fma(static_cast<float>(r.bytes[p * r.stride + o]), r.multiplier,
                               std::fma(static_cast<float>(acc[p * Op + o]), m[o], b[o])));
    }
}

struct Requantize {
    MINNOW_LOOP_BODY static void run(const int32_t* acc, int64_t pixels, int64_t O, int64_t Op, const float* m,
                                     const float* b, const Residual* r, int lo, uint8_t* out, int64_t out_stride) {
        for_each_value(acc, pixels, O, Op, m, b, *r, [&](int64_t p, int64_t o, float v) {
            out[p * out_stride + o] = static_cast<uint8_t>(clamp_byte(std::nearbyint(v), lo));
        });
    }
};

struct Dequantize {
    MINNOW_LOOP_BODY static void run(const int32_t* acc, int64_t pixels, int64_t O, int64_t Op, const float* m,
                                     const float* b, const Residual* r, bool relu, float* out, int64_t out_stride) {
        for_each_value(acc, pixels, O, Op, m, b, *r,
                       [&](int64_t p, int64_t o, float v) { out[p * out_stride + o] = relu ? std::max(v, 0.f) : v; });
    }
};

}  // namespace

bool quantize_image(const float* x, int64_t C, int64_t H, int64_t W, float inv_scale, int zero, int64_t pad,
                    uint8_t* out) {
    const int64_t Cp = round_up(C, kChannelGroup);
    std::fill(out, out + (H + 2 * pad) * (W + 2 * pad) * Cp, static_cast<uint8_t>(zero));
    bool finite = true;
    per_isa::run<QuantizeImage>(x, C, H, W, inv_scale, zero, pad, out, &finite);
    return finite;
}

bool quantize_patches(const float* x, int64_t C, int64_t H, int64_t W, int64_t k, float inv_scale, int zero,
                      uint8_t* out, int64_t h0, int64_t h1) {
    // The bytes of each channel's rows [h0 - pad, h1 + pad) in a plane with a
    // border of `zero`, then each patch as C*k runs of k bytes from the planes.
    // A run of 3 is copied as 4 bytes when the patch has a spare padding
    // entry: the 4th lands where the next run (or the padding entry, whose
    // weights are 0) is written.
    if (h1 < 0) h1 = H;
    if (h0 < 0 || h0 > h1 || h1 > H)
        throw Error("quantize_patches: the rows [" + std::to_string(h0) + ", " + std::to_string(h1) +
                    ") are not inside the image's " + std::to_string(H));
    const int64_t pad = (k - 1) / 2, Hp = H + 2 * pad, Wp = W + 2 * pad, P4 = round_up(C * k * k, kChannelGroup);
    thread_local AlignedVector<uint8_t> planes_buffer;
    uint8_t* planes = scratch(planes_buffer, C * Hp * Wp + kChannelGroup);
    bool finite = true;
    for (int64_t c = 0; c < C; ++c) {  // padded rows [h0, h1 + 2 pad) of channel c
        uint8_t* plane = planes + c * Hp * Wp;
        std::fill(plane + h0 * Wp, plane + (h1 + 2 * pad) * Wp, static_cast<uint8_t>(zero));
        for (int64_t h = std::max<int64_t>(0, h0 - pad); h < std::min(H, h1 + pad); ++h) {
            bool row_finite = true;
            per_isa::run<QuantizeRow>(x + (c * H + h) * W, W, inv_scale, zero, plane + (h + pad) * Wp + pad,
                                      &row_finite);
            finite = finite && row_finite;
        }
    }
    if (!finite) return false;
    const bool word_copies = k == 3 && C * k * k < P4;
    for (int64_t h = h0; h < h1; ++h) {
        uint8_t* row = out + h * W * P4;
        for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < k; ++i) {  // in this order: a word's 4th byte is overwritten by the next run
                const uint8_t* run = planes + (c * Hp + h + i) * Wp;
                uint8_t* to = row + (c * k + i) * k;
                if (word_copies)
                    for (int64_t w = 0; w < W; ++w) std::memcpy(to + w * P4, run + w, 4);
                else
                    for (int64_t w = 0; w < W; ++w) std::memcpy(to + w * P4, run + w, k);
            }
        for (int64_t w = 0; w < W; ++w)
            for (int64_t e = C * k * k + (word_copies ? 1 : 0); e < P4; ++e) row[w * P4 + e] = static_cast<uint8_t>(zero);
    }
    return true;
}

void requantize_row(const int32_t* acc, int64_t pixels, int64_t O, int64_t Op, const float* multiplier,
                    const float* offset, const Residual& residual, int lo, uint8_t* out, int64_t out_stride) {
#if MINNOW_X86
    if (isa_active(Isa::avx512))
        return requantize_row_avx512(acc, pixels, O, Op, multiplier, offset, residual, lo, out, out_stride);
#endif
    per_isa::run<Requantize>(acc, pixels, O, Op, multiplier, offset, &residual, lo, out, out_stride);
}

void dequantize_row(const int32_t* acc, int64_t pixels, int64_t O, int64_t Op, const float* multiplier,
                    const float* offset, const Residual& residual, bool relu, float* out, int64_t out_stride) {
    per_isa::run<Dequantize>(acc, pixels, O, Op, multiplier, offset, &residual, relu, out, out_stride);
}

}  // namespace minnow::int8
