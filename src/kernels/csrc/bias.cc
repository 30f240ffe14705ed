// A linear layer's bias over the last axis: y = x + b, and its gradient, the column sums of dy.
// The sums run in float over blocks of rows (a vectorised add per row) and add each block's sums
// into double, so a gradient summed over thousands of rows keeps float's precision.
#include <cstddef>
#include <vector>

#include "kernel.h"

// params: x [.., D], b [D] -> y
CK_KERNEL(BiasAddForward) {
    const float *x = static_cast<const float *>(params[0]);
    const float *b = static_cast<const float *>(params[1]);
    float *y = static_cast<float *>(params[2]);
    int64_t rows, d;
    ck::rows_cols(ndims[0], shapes[0], &rows, &d);
    for (int64_t r = 0; r < rows; ++r) {
        const float *xr = x + r * d;
        float *yr = y + r * d;
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) yr[j] = xr[j] + b[j];
    }
    return 0;
}

// params: dy [.., D], b [D] (for its shape) -> db [D]
CK_KERNEL(BiasAddBackward) {
    const float *dy = static_cast<const float *>(params[0]);
    float *db = static_cast<float *>(params[2]);
    int64_t rows, d;
    ck::rows_cols(ndims[0], shapes[0], &rows, &d);
    const int64_t block = 64;
    std::vector<float> part(static_cast<size_t>(d));
    std::vector<double> total(static_cast<size_t>(d), 0.0);
    float *p = part.data();
    double *t = total.data();
    for (int64_t r0 = 0; r0 < rows; r0 += block) {
        const int64_t r1 = r0 + block < rows ? r0 + block : rows;
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) p[j] = 0.0f;
        for (int64_t r = r0; r < r1; ++r) {
            const float *g = dy + r * d;
#pragma omp simd
            for (int64_t j = 0; j < d; ++j) p[j] += g[j];
        }
        for (int64_t j = 0; j < d; ++j) t[j] += p[j];
    }
    for (int64_t j = 0; j < d; ++j) db[j] = static_cast<float>(t[j]);
    return 0;
}
