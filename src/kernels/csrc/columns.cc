// The columns of a k x k convolution as the CPU formulation (src/layers/conv2d.py) builds them: of
// a zero-padded map x [B, C, R, W] read as B x C rows of R * W values, the slice of `out_h * W`
// values that starts at offset i * W + j, for each kernel offset (i, j) of a kk x kk kernel, stacked
// offset-major: col [B, kk * kk * C, out_h, W], out_h = R - kk. MindSpore runs that as kk * kk
// StridedSlices and a Concat, whose gradient pads every slice back to the full map and sums them
// (AddN); here the forward is one copy per (image, offset, channel) and the backward adds each
// slice of the gradient into place.
#include <cstring>

#include "kernel.h"

namespace {

struct Geometry {
    int64_t batch, channels, map, length, kk, width;
};

// x [B, C, R, W] and col [B, kk * kk * C, out_h, W]: kk from the channel ratio, out_h = R - kk.
Geometry geometry(const int64_t *x, const int64_t *col) {
    Geometry g;
    g.batch = x[0];
    g.channels = x[1];
    g.width = x[3];
    g.map = x[2] * x[3];
    g.length = col[2] * col[3];
    const int64_t offsets = g.channels ? col[1] / g.channels : 0;
    g.kk = 1;
    while ((g.kk + 1) * (g.kk + 1) <= offsets) ++g.kk;
    return g;
}

}  // namespace

// params: x -> col
CK_KERNEL(ColumnsForward) {
    const float *x = static_cast<const float *>(params[0]);
    float *col = static_cast<float *>(params[1]);
    const Geometry g = geometry(shapes[0], shapes[1]);
    const int64_t offsets = g.kk * g.kk;
    // channel-outer: the channel's map stays in cache while its kk * kk slices are copied out
    for (int64_t b = 0; b < g.batch; ++b) {
        float *colb = col + b * offsets * g.channels * g.length;
        for (int64_t c = 0; c < g.channels; ++c) {
            const float *src = x + (b * g.channels + c) * g.map;
            for (int64_t o = 0; o < offsets; ++o)
                std::memcpy(colb + (o * g.channels + c) * g.length, src + (o / g.kk) * g.width + o % g.kk,
                            static_cast<size_t>(g.length) * sizeof(float));
        }
    }
    return 0;
}

// params: dcol, x (for its shape) -> dx
CK_KERNEL(ColumnsBackward) {
    const float *dcol = static_cast<const float *>(params[0]);
    float *dx = static_cast<float *>(params[2]);
    const Geometry g = geometry(shapes[1], shapes[0]);
    std::memset(dx, 0, static_cast<size_t>(g.batch * g.channels * g.map) * sizeof(float));
    const int64_t offsets = g.kk * g.kk;
    for (int64_t b = 0; b < g.batch; ++b) {
        const float *dcolb = dcol + b * offsets * g.channels * g.length;
        for (int64_t c = 0; c < g.channels; ++c) {
            float *dst = dx + (b * g.channels + c) * g.map;
            for (int64_t o = 0; o < offsets; ++o) {
                const float *src = dcolb + (o * g.channels + c) * g.length;
                float *d = dst + (o / g.kk) * g.width + o % g.kk;
#pragma omp simd
                for (int64_t t = 0; t < g.length; ++t) d[t] += src[t];
            }
        }
    }
    return 0;
}
