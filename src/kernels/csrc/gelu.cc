// Exact (erf) GELU and its derivative, elementwise: y = x Phi(x), dy/dx = Phi(x) + x phi(x); and a
// linear layer's bias followed by GELU (the MLP's fc1 and act), one pass each way: the backward
// recomputes x + b instead of keeping it.
#include "kernel.h"
#include "vmath.h"

namespace {

inline float gelu(float v) { return 0.5f * v * ck::two_phi(v); }

inline float gelu_slope(float v) {
    const float inv_sqrt_2pi = 0.39894228040143268f;
    return 0.5f * ck::two_phi(v) + v * inv_sqrt_2pi * ck::vexp(-0.5f * v * v);
}

}  // namespace

CK_KERNEL(GeluForward) {
    const float *x = static_cast<const float *>(params[0]);
    float *y = static_cast<float *>(params[1]);
    const int64_t n = ck::numel(ndims[0], shapes[0]);
    ck::parallel_for(n, 1, [=](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) y[i] = gelu(x[i]);
    });
    return 0;
}

// params: x, dy -> dx
CK_KERNEL(GeluBackward) {
    const float *x = static_cast<const float *>(params[0]);
    const float *dy = static_cast<const float *>(params[1]);
    float *dx = static_cast<float *>(params[2]);
    const int64_t n = ck::numel(ndims[0], shapes[0]);
    ck::parallel_for(n, 1, [=](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) dx[i] = dy[i] * gelu_slope(x[i]);
    });
    return 0;
}

// params: x [.., D], b [D] -> y = GELU(x + b)
CK_KERNEL(BiasGeluForward) {
    return ck::bias_rows(params, ndims, shapes, 1, gelu);
}

// params: x, b, dy -> dx = dy GELU'(x + b), db = the column sums of dx (ck::column_sums)
CK_KERNEL(BiasGeluBackward) {
    const float *x = static_cast<const float *>(params[0]);
    const float *b = static_cast<const float *>(params[1]);
    const float *dy = static_cast<const float *>(params[2]);
    float *dx = static_cast<float *>(params[3]);
    float *db = static_cast<float *>(params[4]);
    int64_t rows, d;
    ck::rows_cols(ndims[0], shapes[0], &rows, &d);
    ck::column_sums(rows, d, 8, db, [&](int64_t r, float *p) {
        const float *xr = x + r * d, *gr = dy + r * d;
        float *dr = dx + r * d;
        for (int64_t j = 0; j < d; ++j) {
            const float g = gr[j] * gelu_slope(xr[j] + b[j]);
            dr[j] = g;
            p[j] += g;
        }
    });
    return 0;
}
