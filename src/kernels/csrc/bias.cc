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
    ck::parallel_for(rows, 2 * d, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
            const float *xr = x + r * d;
            float *yr = y + r * d;
#pragma omp simd
            for (int64_t j = 0; j < d; ++j) yr[j] = xr[j] + b[j];
        }
    });
    return 0;
}

// params: dy [.., D], b [D] (for its shape) -> db [D]
CK_KERNEL(BiasAddBackward) {
    const float *dy = static_cast<const float *>(params[0]);
    float *db = static_cast<float *>(params[2]);
    int64_t rows, d;
    ck::rows_cols(ndims[0], shapes[0], &rows, &d);
    const int64_t block = 64, blocks = (rows + block - 1) / block;
    const int parts = ck::parts_for(blocks, block * d);
    std::vector<double> totals(static_cast<size_t>(d * parts), 0.0);  // per part, added up at the end
    ck::run_parts(blocks, parts, [&](int64_t lo, int64_t hi, int part) {
        std::vector<float> sums(static_cast<size_t>(d));
        float *p = sums.data();
        double *t = totals.data() + d * part;
        for (int64_t k = lo; k < hi; ++k) {
            const int64_t r0 = k * block, r1 = r0 + block < rows ? r0 + block : rows;
#pragma omp simd
            for (int64_t j = 0; j < d; ++j) p[j] = 0.0f;
            for (int64_t r = r0; r < r1; ++r) {
                const float *g = dy + r * d;
#pragma omp simd
                for (int64_t j = 0; j < d; ++j) p[j] += g[j];
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
