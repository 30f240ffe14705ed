// LayerNorm over the last axis with affine gamma/beta: forward (y, mean, rstd) and backward
// (dx, dgamma, dbeta). Row statistics and the column sums of dgamma/dbeta accumulate in double:
// float sums over hundreds of values drift from nn.LayerNorm by more than the tests allow.
#include <cmath>
#include <vector>

#include "kernel.h"
#include "vmath.h"

namespace {

// y = LayerNorm(x) row by row, x = a (+ r when r is given, written to x_out): the residual sum and the
// norm in one pass
void forward(const float *a, const float *r, float *x_out, const float *gamma, const float *beta, float eps,
             float *y, float *mean_out, float *rstd_out, int64_t rows, int64_t d) {
    ck::parallel_for(rows, 2 * d, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
        const float *xr = a + i * d;
        if (r != nullptr) {
            const float *rr = r + i * d;
            float *sr = x_out + i * d;
#pragma omp simd
            for (int64_t j = 0; j < d; ++j) sr[j] = xr[j] + rr[j];
            xr = sr;
        }
        float *yr = y + i * d;
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
        mean_out[i] = m;
        rstd_out[i] = rstd;
    }
    });
}

// dx = the norm's input gradient (+ dx_in, the gradient the sum receives besides the norm's, when given)
void backward(const float *dy, const float *dx_in, const float *x, const float *mean, const float *rstd,
              const float *gamma, float *dx, float *dgamma, float *dbeta, int64_t rows, int64_t d) {
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
        if (dx_in != nullptr) {
            const float *ir = dx_in + r * d;
#pragma omp simd
            for (int64_t j = 0; j < d; ++j) {
                float xhat = (xr[j] - m) * rs;
                dr[j] = ir[j] + rs * (gr[j] * gamma[j] - ma - xhat * mb);
            }
        } else {
#pragma omp simd
            for (int64_t j = 0; j < d; ++j) {
                float xhat = (xr[j] - m) * rs;
                dr[j] = rs * (gr[j] * gamma[j] - ma - xhat * mb);
            }
        }
    }
    });
    ck::sum_parts(sums.data(), parts, 2 * d, d, dgamma);
    ck::sum_parts(sums.data() + d, parts, 2 * d, d, dbeta);
}

const float *floats(void *p) { return static_cast<const float *>(p); }
float *out(void *p) { return static_cast<float *>(p); }

}  // namespace

// params: x [.., D], gamma [D], beta [D], eps [1] -> y [.., D], mean [..], rstd [..]
CK_KERNEL(LayerNormForward) {
    int64_t rows, d;
    ck::rows_cols(ndims[0], shapes[0], &rows, &d);
    forward(floats(params[0]), nullptr, nullptr, floats(params[1]), floats(params[2]), *floats(params[3]),
            out(params[4]), out(params[5]), out(params[6]), rows, d);
    return 0;
}

// params: dy, x, mean, rstd, gamma -> dx, dgamma, dbeta
CK_KERNEL(LayerNormBackward) {
    int64_t rows, d;
    ck::rows_cols(ndims[0], shapes[0], &rows, &d);
    backward(floats(params[0]), nullptr, floats(params[1]), floats(params[2]), floats(params[3]), floats(params[4]),
             out(params[5]), out(params[6]), out(params[7]), rows, d);
    return 0;
}

// A residual sum and the LayerNorm of it (a pre-norm block's `x = x + f(..)` then `norm(x)`).
// params: a [.., D], r [.., D], gamma [D], beta [D], eps [1] -> x = a + r, y = LayerNorm(x), mean, rstd
CK_KERNEL(AddLayerNormForward) {
    int64_t rows, d;
    ck::rows_cols(ndims[0], shapes[0], &rows, &d);
    forward(floats(params[0]), floats(params[1]), out(params[5]), floats(params[2]), floats(params[3]),
            *floats(params[4]), out(params[6]), out(params[7]), out(params[8]), rows, d);
    return 0;
}

// params: dy, dx (the sum's gradient from its other users), x, mean, rstd, gamma -> the gradient of a and
// of r (one tensor: the sum passes it to both), dgamma, dbeta
CK_KERNEL(AddLayerNormBackward) {
    int64_t rows, d;
    ck::rows_cols(ndims[0], shapes[0], &rows, &d);
    backward(floats(params[0]), floats(params[1]), floats(params[2]), floats(params[3]), floats(params[4]),
             floats(params[5]), out(params[6]), out(params[7]), out(params[8]), rows, d);
    return 0;
}
