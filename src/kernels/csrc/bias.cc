// A linear layer's bias over the last axis: y = x + b, and its gradient, the column sums of dy
// (ck::column_sums: float over blocks of rows, double across them).
#include "kernel.h"

// params: x [.., D], b [D] -> y
CK_KERNEL(BiasAddForward) {
    return ck::bias_rows(params, ndims, shapes, 2, [](float v) { return v; });
}

// params: dy [.., D], b [D] (for its shape) -> db [D]
CK_KERNEL(BiasAddBackward) {
    const float *dy = static_cast<const float *>(params[0]);
    float *db = static_cast<float *>(params[2]);
    int64_t rows, d;
    ck::rows_cols(ndims[0], shapes[0], &rows, &d);
    ck::column_sums(rows, d, 1, db, [&](int64_t r, float *p) {
        const float *g = dy + r * d;
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) p[j] += g[j];
    });
    return 0;
}
