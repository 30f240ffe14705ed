// Column sums of a row-major [rows, d] matrix (a bias gradient). The sums run in float over blocks
// of rows (a vectorised add per row) and add each block's sums into double, so a gradient summed
// over thousands of rows keeps float's precision.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace ck {

static inline void column_sums(const float *m, int64_t rows, int64_t d, float *out) {
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
            const float *g = m + r * d;
#pragma omp simd
            for (int64_t j = 0; j < d; ++j) p[j] += g[j];
        }
        for (int64_t j = 0; j < d; ++j) t[j] += p[j];
    }
    for (int64_t j = 0; j < d; ++j) out[j] = static_cast<float>(t[j]);
}

}  // namespace ck
