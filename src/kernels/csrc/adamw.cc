// The AdamW update of every parameter in one kernel (torch.optim.AdamW, amsgrad=False, in the
// bias-corrected form of src/trainer/adamw.py), weights and moments written in place: MindSpore's way
// is one FusedCastAdamWeightDecay kernel per parameter, and with hundreds of small parameters their
// count, not their arithmetic, is the update's cost.
#include <cmath>

#include "kernel.h"

// params: hyper [7] = (lr, step (1 at the first update), grad_scale, eps, beta2, 1 - beta1, 1 - beta2),
// decay [N] (each parameter's weight decay), N weights, N gradients, N first moments, N second moments
// (float32; the four of one parameter the same size) -> a dummy [1]. torch.optim.AdamW's arithmetic,
// operation for operation:
//   g = grad * grad_scale;  m += (g - m) (1 - beta1);  v = v beta2 + g^2 (1 - beta2)
//   w *= 1 - lr decay;  w -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
// with the bias corrections bc = 1 - beta^step in double, as torch computes them: in float32 the
// difference 1 - beta2^step keeps few correct digits.
CK_KERNEL(AdamWUpdate) {
    const int n = (nparam - 3) / 4;
    if (n < 1 || 4 * n + 3 != nparam) return 1;
    const float *hyper = static_cast<const float *>(params[0]);
    const float *decay = static_cast<const float *>(params[1]);
    const double lr = hyper[0], step = hyper[1];
    const float scale = hyper[2], eps = hyper[3], beta2 = hyper[4], c1 = hyper[5], c2 = hyper[6];
    const double bc1 = -std::expm1(step * std::log1p(-static_cast<double>(c1)));
    const double bc2 = -std::expm1(step * std::log1p(-static_cast<double>(c2)));
    const float step_size = static_cast<float>(lr / bc1), bc2_sqrt = static_cast<float>(std::sqrt(bc2));
    ck::tensor_ranges(
        n, [&](int t) { return ck::numel(ndims[2 + t], shapes[2 + t]); }, 8,
        [&](int t, int64_t lo, int64_t hi) {
            float *w = static_cast<float *>(params[2 + t]);
            const float *g = static_cast<const float *>(params[2 + n + t]);
            float *m = static_cast<float *>(params[2 + 2 * n + t]);
            float *v = static_cast<float *>(params[2 + 3 * n + t]);
            const float keep = static_cast<float>(1.0 - lr * decay[t]);
#pragma omp simd
            for (int64_t i = lo; i < hi; ++i) {
                const float gi = g[i] * scale;
                const float mi = m[i] + (gi - m[i]) * c1;
                const float vi = v[i] * beta2 + gi * gi * c2;
                m[i] = mi;
                v[i] = vi;
                w[i] = w[i] * keep - step_size * mi / (std::sqrt(vi) / bc2_sqrt + eps);
            }
        });
    *static_cast<float *>(params[nparam - 1]) = 0.0f;
    return 0;
}
