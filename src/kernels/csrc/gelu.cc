// Exact (erf) GELU and its derivative, elementwise: y = x Phi(x), dy/dx = Phi(x) + x phi(x); and a
// linear layer's bias followed by GELU (the MLP's fc1 and act), one pass each way: the backward
// recomputes x + b instead of keeping it.
#include <cstddef>
#include <vector>

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
    const float *x = static_cast<const float *>(params[0]);
    const float *b = static_cast<const float *>(params[1]);
    float *y = static_cast<float *>(params[2]);
    int64_t rows, d;
    ck::rows_cols(ndims[0], shapes[0], &rows, &d);
    ck::parallel_for(rows, d, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
            const float *xr = x + r * d;
            float *yr = y + r * d;
            for (int64_t j = 0; j < d; ++j) yr[j] = gelu(xr[j] + b[j]);
        }
    });
    return 0;
}

// params: x, b, dy -> dx = dy GELU'(x + b), db = the column sums of dx (in float over blocks of rows,
// in double across blocks and parts, as the bias kernel's)
CK_KERNEL(BiasGeluBackward) {
    const float *x = static_cast<const float *>(params[0]);
    const float *b = static_cast<const float *>(params[1]);
    const float *dy = static_cast<const float *>(params[2]);
    float *dx = static_cast<float *>(params[3]);
    float *db = static_cast<float *>(params[4]);
    int64_t rows, d;
    ck::rows_cols(ndims[0], shapes[0], &rows, &d);
    const int64_t block = 64, blocks = (rows + block - 1) / block;
    const int parts = ck::parts_for(blocks, block * d);
    std::vector<double> totals(static_cast<size_t>(d * parts), 0.0);
    ck::run_parts(blocks, parts, [&](int64_t lo, int64_t hi, int part) {
        std::vector<float> sums(static_cast<size_t>(d));
        float *p = sums.data();
        double *t = totals.data() + d * part;
        for (int64_t k = lo; k < hi; ++k) {
            const int64_t r0 = k * block, r1 = r0 + block < rows ? r0 + block : rows;
            for (int64_t j = 0; j < d; ++j) p[j] = 0.0f;
            for (int64_t r = r0; r < r1; ++r) {
                const float *xr = x + r * d, *gr = dy + r * d;
                float *dr = dx + r * d;
                for (int64_t j = 0; j < d; ++j) {
                    const float g = gr[j] * gelu_slope(xr[j] + b[j]);
                    dr[j] = g;
                    p[j] += g;
                }
            }
            for (int64_t j = 0; j < d; ++j) t[j] += p[j];
        }
    });
    for (int64_t j = 0; j < d; ++j) {
        double total = 0.0;
        for (int part = 0; part < parts; ++part) total += totals[d * part + j];
        db[j] = static_cast<float>(total);
    }
    return 0;
}
