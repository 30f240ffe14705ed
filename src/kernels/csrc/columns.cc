// The columns (im2col) of a stride-1 kk x kk convolution, as the CPU formulation
// (src/layers/conv2d.py) multiplies them by its weight: of a zero-padded map x [B, C, R, W], for
// each kernel offset (i, j), the window of out_h x out_w values starting at row i, column j,
// stacked offset-major: col [B, kk * kk * C, out_h, out_w], out_w = W - kk + 1 (out_h is the
// output's, so rows of x below the last window are never read). MindSpore runs the same as kk * kk
// slices of the flattened map and a Concat (whose gradient pads every slice back to the full map
// and sums them), then crops the columns that wrap around the row: here the forward is one copy per
// output row and the backward adds each row of the gradient back into place.
#include <cstring>

#include "kernel.h"

namespace {

struct Geometry {
    int64_t batch, channels, rows, width, kk, out_h, out_w;
};

// x [B, C, R, W] and col [B, kk * kk * C, out_h, out_w]: kk from the channel ratio.
Geometry geometry(const int64_t *x, const int64_t *col) {
    Geometry g{x[0], x[1], x[2], x[3], 1, col[2], col[3]};
    const int64_t offsets = g.channels ? col[1] / g.channels : 0;
    while ((g.kk + 1) * (g.kk + 1) <= offsets) ++g.kk;
    return g;
}

}  // namespace

// params: x -> col
CK_KERNEL(ColumnsForward) {
    const float *x = static_cast<const float *>(params[0]);
    float *col = static_cast<float *>(params[1]);
    const Geometry g = geometry(shapes[0], shapes[1]);
    const int64_t offsets = g.kk * g.kk, map = g.rows * g.width, plane = g.out_h * g.out_w;
    const size_t row_bytes = static_cast<size_t>(g.out_w) * sizeof(float);
    // channel-outer: the channel's map stays in cache while its kk * kk windows are copied out
    for (int64_t b = 0; b < g.batch; ++b) {
        float *colb = col + b * offsets * g.channels * plane;
        for (int64_t c = 0; c < g.channels; ++c) {
            const float *src = x + (b * g.channels + c) * map;
            for (int64_t o = 0; o < offsets; ++o) {
                const float *s = src + (o / g.kk) * g.width + o % g.kk;
                float *d = colb + (o * g.channels + c) * plane;
                for (int64_t r = 0; r < g.out_h; ++r) std::memcpy(d + r * g.out_w, s + r * g.width, row_bytes);
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
                const float *s = dcolb + (o * g.channels + c) * plane;
                float *d = dst + (o / g.kk) * g.width + o % g.kk;
                for (int64_t r = 0; r < g.out_h; ++r) {
                    const float *sr = s + r * g.out_w;
                    float *dr = d + r * g.width;
#pragma omp simd
                    for (int64_t t = 0; t < g.out_w; ++t) dr[t] += sr[t];
                }
            }
        }
    }
    return 0;
}
