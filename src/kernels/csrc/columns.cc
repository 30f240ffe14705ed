// The columns (im2col) of a stride-1 kk x kk convolution, as the CPU formulation
// (src/layers/conv2d.py) multiplies them by its weight: of a map x [B, C, R, W] with `pad` zeros on
// every side, for each kernel offset (i, j), the window of out_h x out_w values starting at row i,
// column j, stacked offset-major: col [B, kk * kk * C, out_h, out_w], out_w = W + 2 pad - kk + 1
// (out_h is the output's, so rows of x below the last window are never read). The padding is read
// as zeros here, not built: MindSpore pads by concatenation, whose gradient is a slice per side.
// MindSpore runs the columns as kk * kk slices of the flattened map and a Concat (whose gradient
// pads every slice back to the full map and sums them), then crops the columns that wrap around the
// row: here the forward is one copy per output row and the backward adds each row of the gradient
// back into place.
#include <cstring>

#include "kernel.h"

namespace {

struct Geometry {
    int64_t batch, channels, rows, width, kk, out_h, out_w, pad;
};

// x [B, C, R, W] and col [B, kk * kk * C, out_h, out_w]: kk from the channel ratio, and the zero
// padding the kernel adds around x (the same on every side, as a stride-1 convolution's) from the
// widths: out_w = W + 2 pad - kk + 1 (pad 0 for a map padded before, out_w = W - kk + 1).
Geometry geometry(const int64_t *x, const int64_t *col) {
    Geometry g{x[0], x[1], x[2], x[3], 1, col[2], col[3], 0};
    const int64_t offsets = g.channels ? col[1] / g.channels : 0;
    while ((g.kk + 1) * (g.kk + 1) <= offsets) ++g.kk;
    g.pad = (g.out_w - g.width + g.kk - 1) / 2;
    return g;
}

// For kernel offset (i, j): the output rows [r0, r1) and columns [q0, q1) whose input lies inside
// x; the rest of the window reads the zero padding.
struct Span {
    int64_t r0, r1, q0, q1;
};

Span span(const Geometry &g, int64_t i, int64_t j) {
    auto clamp = [](int64_t v, int64_t hi) { return v < 0 ? 0 : (v > hi ? hi : v); };
    return {clamp(g.pad - i, g.out_h), clamp(g.rows + g.pad - i, g.out_h), clamp(g.pad - j, g.out_w),
            clamp(g.width + g.pad - j, g.out_w)};
}

}  // namespace

// params: x -> col
CK_KERNEL(ColumnsForward) {
    const float *x = static_cast<const float *>(params[0]);
    float *col = static_cast<float *>(params[1]);
    const Geometry g = geometry(shapes[0], shapes[1]);
    const int64_t offsets = g.kk * g.kk, map = g.rows * g.width, plane = g.out_h * g.out_w;
    if (g.pad > 0) std::memset(col, 0, static_cast<size_t>(g.batch * offsets * g.channels * plane) * sizeof(float));
    // channel-outer: the channel's map stays in cache while its kk * kk windows are copied out
    for (int64_t b = 0; b < g.batch; ++b) {
        float *colb = col + b * offsets * g.channels * plane;
        for (int64_t c = 0; c < g.channels; ++c) {
            const float *src = x + (b * g.channels + c) * map;
            for (int64_t o = 0; o < offsets; ++o) {
                const int64_t i = o / g.kk, j = o % g.kk;
                const Span sp = span(g, i, j);
                if (sp.q1 <= sp.q0) continue;
                const size_t bytes = static_cast<size_t>(sp.q1 - sp.q0) * sizeof(float);
                float *d = colb + (o * g.channels + c) * plane;
                for (int64_t r = sp.r0; r < sp.r1; ++r)
                    std::memcpy(d + r * g.out_w + sp.q0, src + (r + i - g.pad) * g.width + sp.q0 + j - g.pad, bytes);
            }
        }
    }
    return 0;
}

// params: dcol, x (for its shape) -> dx
CK_KERNEL(ColumnsBackward) {
    const float *dcol = static_cast<const float *>(params[0]);
    float *dx = static_cast<float *>(params[2]);
    const Geometry g = geometry(shapes[1], shapes[0]);
    const int64_t offsets = g.kk * g.kk, map = g.rows * g.width, plane = g.out_h * g.out_w;
    std::memset(dx, 0, static_cast<size_t>(g.batch * g.channels * map) * sizeof(float));
    for (int64_t b = 0; b < g.batch; ++b) {
        const float *dcolb = dcol + b * offsets * g.channels * plane;
        for (int64_t c = 0; c < g.channels; ++c) {
            float *dst = dx + (b * g.channels + c) * map;
            for (int64_t o = 0; o < offsets; ++o) {
                const int64_t i = o / g.kk, j = o % g.kk;
                const Span sp = span(g, i, j);
                const float *s = dcolb + (o * g.channels + c) * plane;
                for (int64_t r = sp.r0; r < sp.r1; ++r) {
                    const float *sr = s + r * g.out_w;
                    float *dr = dst + (r + i - g.pad) * g.width + j - g.pad;
#pragma omp simd
                    for (int64_t t = sp.q0; t < sp.q1; ++t) dr[t] += sr[t];
                }
            }
        }
    }
    return 0;
}
