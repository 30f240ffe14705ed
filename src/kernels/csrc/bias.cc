// A linear layer's bias over the last axis: y = x + b, and its gradient, the column sums of dy.
#include "column_sums.h"
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
    int64_t rows, d;
    ck::rows_cols(ndims[0], shapes[0], &rows, &d);
    ck::column_sums(static_cast<const float *>(params[0]), rows, d, static_cast<float *>(params[2]));
    return 0;
}
