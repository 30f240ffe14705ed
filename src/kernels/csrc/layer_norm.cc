// LayerNorm over the last axis with affine gamma/beta: forward (y, mean, rstd) and backward
// (dx, dgamma, dbeta). Row statistics and the column sums of dgamma/dbeta accumulate in double:
// float sums over hundreds of values drift from nn.LayerNorm by more than the tests allow.
#include <cmath>
#include <vector>

#include "kernel.h"
#include "vmath.h"

// params: x [.., D], gamma [D], beta [D], eps [1] -> y [.., D], mean [..], rstd [..]
CK_KERNEL(LayerNormForward) {
    const float *x = static_cast<const float *>(params[0]);
    const float *gamma = static_cast<const float *>(params[1]);
    const float *beta = static_cast<const float *>(params[2]);
    const float eps = *static_cast<const float *>(params[3]);
    float *y = static_cast<float *>(params[4]);
    float *mean_out = static_cast<float *>(params[5]);
    float *rstd_out = static_cast<float *>(params[6]);
    int64_t rows, d;
    ck::rows_cols(ndims[0], shapes[0], &rows, &d);
    ck::parallel_for(rows, 2 * d, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
        const float *xr = x + r * d;
        float *yr = y + r * d;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < d; ++j) s += xr[j];
        const double mean = s / d;
        double q = 0.0;
#pragma omp simd reduction(+ : q)
        for (int64_t j = 0; j < d; ++j) {
            double c = xr[j] - mean;
            q += c * c;
        }
        const float rstd = static_cast<float>(1.0 / std::sqrt(q / d + eps));
        const float m = static_cast<float>(mean);
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) yr[j] = (xr[j] - m) * rstd * gamma[j] + beta[j];
        mean_out[r] = m;
        rstd_out[r] = rstd;
    }
    });
    return 0;
}

// params: dy, x, mean, rstd, gamma -> dx, dgamma, dbeta
CK_KERNEL(LayerNormBackward) {
    const float *dy = static_cast<const float *>(params[0]);
    const float *x = static_cast<const float *>(params[1]);
    const float *mean = static_cast<const float *>(params[2]);
    const float *rstd = static_cast<const float *>(params[3]);
    const float *gamma = static_cast<const float *>(params[4]);
    float *dx = static_cast<float *>(params[5]);
    float *dgamma = static_cast<float *>(params[6]);
    float *dbeta = static_cast<float *>(params[7]);
    int64_t rows, d;
    ck::rows_cols(ndims[0], shapes[0], &rows, &d);
    const int parts = ck::parts_for(rows, 3 * d);
    // the column sums of dgamma and dbeta, per part
    std::vector<double> sums(static_cast<size_t>(2 * d * parts), 0.0);
    ck::run_parts(rows, parts, [&](int64_t lo, int64_t hi, int part) {
    double *sg = sums.data() + 2 * d * part, *sb = sg + d;
    for (int64_t r = lo; r < hi; ++r) {
        const float *gr = dy + r * d;
        const float *xr = x + r * d;
        float *dr = dx + r * d;
        const float m = mean[r], rs = rstd[r];
        float a = 0.0f, b = 0.0f;  // sums of g and g * xhat over the row, g = dy * gamma
#pragma omp simd reduction(+ : a, b)
        for (int64_t j = 0; j < d; ++j) {
            float xhat = (xr[j] - m) * rs;
            float g = gr[j] * gamma[j];
            a += g;
            b += g * xhat;
            sg[j] += static_cast<double>(gr[j] * xhat);
            sb[j] += static_cast<double>(gr[j]);
        }
        const float ma = a / d, mb = b / d;
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) {
            float xhat = (xr[j] - m) * rs;
            dr[j] = rs * (gr[j] * gamma[j] - ma - xhat * mb);
        }
    }
    });
    ck::sum_parts(sums.data(), parts, 2 * d, d, dgamma);
    ck::sum_parts(sums.data() + d, parts, 2 * d, d, dbeta);
    return 0;
}
