// The exponential moving average of every parameter in one kernel, written in place into the shadows
// (src/trainer/ema.py): MindSpore's way is four kernels per parameter (two products, a sum, an Assign).
#include "kernel.h"

// params: weights [2] = (decay, 1 - decay), N shadows, N parameters (float32; the shadow and the
// parameter of one pair the same size) -> a dummy [1]; shadow <- shadow * decay + parameter * (1 - decay)
CK_KERNEL(EmaUpdate) {
    const int n = (nparam - 2) / 2;
    if (n < 1 || 2 * n + 2 != nparam) return 1;
    const float *weights = static_cast<const float *>(params[0]);
    const float decay = weights[0], rest = weights[1];
    ck::tensor_ranges(
        n, [&](int t) { return ck::numel(ndims[1 + t], shapes[1 + t]); }, 2,
        [&](int t, int64_t lo, int64_t hi) {
            float *shadow = static_cast<float *>(params[1 + t]);
            const float *param = static_cast<const float *>(params[1 + n + t]);
#pragma omp simd
            for (int64_t i = lo; i < hi; ++i) shadow[i] = shadow[i] * decay + param[i] * rest;
        });
    *static_cast<float *>(params[nparam - 1]) = 0.0f;
    return 0;
}
