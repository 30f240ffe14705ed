// Softmax of scale * x over the last axis and its backward pass dx = scale * y * (dy - sum(dy * y)). The
// scale (the attention's 1/sqrt(head dim)) is applied here so that no scaled copy of x is made and kept.
#include "kernel.h"
#include "vmath.h"

// params: x, scale [1] -> y
CK_KERNEL(SoftmaxForward) {
    const float *x = static_cast<const float *>(params[0]);
    const float scale = *static_cast<const float *>(params[1]);
    float *y = static_cast<float *>(params[2]);
    int64_t rows, n;
    ck::rows_cols(ndims[0], shapes[0], &rows, &n);
    ck::parallel_for(rows, 2 * n, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float m = xr[0] * scale;
#pragma omp simd reduction(max : m)
        for (int64_t j = 0; j < n; ++j) m = xr[j] * scale > m ? xr[j] * scale : m;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < n; ++j) {
            float e = ck::vexp(xr[j] * scale - m);
            yr[j] = e;
            s += e;
        }
        const float inv = 1.0f / s;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) yr[j] *= inv;
    }
    });
    return 0;
}

// params: y, dy, scale [1] -> dx
CK_KERNEL(SoftmaxBackward) {
    const float *y = static_cast<const float *>(params[0]);
    const float *dy = static_cast<const float *>(params[1]);
    const float scale = *static_cast<const float *>(params[2]);
    float *dx = static_cast<float *>(params[3]);
    int64_t rows, n;
    ck::rows_cols(ndims[0], shapes[0], &rows, &n);
    ck::parallel_for(rows, 3 * n, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
        const float *yr = y + r * n;
        const float *gr = dy + r * n;
        float *dr = dx + r * n;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < n; ++j) s += yr[j] * gr[j];
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) dr[j] = scale * yr[j] * (gr[j] - s);
    }
    });
    return 0;
}
