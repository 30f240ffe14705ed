// Exact (erf) GELU and its derivative, elementwise: y = x Phi(x), dy/dx = Phi(x) + x phi(x).
#include "kernel.h"
#include "vmath.h"

CK_KERNEL(GeluForward) {
    const float *x = static_cast<const float *>(params[0]);
    float *y = static_cast<float *>(params[1]);
    const int64_t n = ck::numel(ndims[0], shapes[0]);
    ck::parallel_for(n, 1, [=](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) y[i] = 0.5f * x[i] * ck::two_phi(x[i]);
    });
    return 0;
}

// params: x, dy -> dx
CK_KERNEL(GeluBackward) {
    const float *x = static_cast<const float *>(params[0]);
    const float *dy = static_cast<const float *>(params[1]);
    float *dx = static_cast<float *>(params[2]);
    const int64_t n = ck::numel(ndims[0], shapes[0]);
    const float inv_sqrt_2pi = 0.39894228040143268f;
    ck::parallel_for(n, 1, [=](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
            float v = x[i];
            float pdf = inv_sqrt_2pi * ck::vexp(-0.5f * v * v);
            dx[i] = dy[i] * (0.5f * ck::two_phi(v) + v * pdf);
        }
    });
    return 0;
}
