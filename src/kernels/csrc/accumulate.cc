// Gradient accumulation's buffers (src/trainer/train_one_step.py), every tensor in one kernel: MindSpore's
// way is one AssignAdd per tensor for a micro-batch, and an Add and an Assign per tensor for the last.
#include "kernel.h"

namespace {

// fn(buffer, grad, out or nullptr, lo, hi) over N buffers, N gradients (float32, pairwise the same size)
// and, with `outputs`, N outputs after them
template <class F>
void pairs(void **params, int *ndims, int64_t **shapes, int n, bool outputs, F fn) {
    ck::tensor_ranges(
        n, [&](int t) { return ck::numel(ndims[t], shapes[t]); }, 1,
        [&](int t, int64_t lo, int64_t hi) {
            float *buffer = static_cast<float *>(params[t]);
            const float *grad = static_cast<const float *>(params[n + t]);
            float *out = outputs ? static_cast<float *>(params[2 * n + t]) : nullptr;
            fn(buffer, grad, out, lo, hi);
        });
}

}  // namespace

// params: N buffers, N gradients -> a dummy [1]; buffer += gradient, in place
CK_KERNEL(AddInto) {
    const int n = (nparam - 1) / 2;
    if (n < 1 || 2 * n + 1 != nparam) return 1;
    pairs(params, ndims, shapes, n, false, [](float *b, const float *g, float *, int64_t lo, int64_t hi) {
#pragma omp simd
        for (int64_t i = lo; i < hi; ++i) b[i] += g[i];
    });
    *static_cast<float *>(params[nparam - 1]) = 0.0f;
    return 0;
}

// params: N buffers, N gradients -> N sums buffer + gradient; the buffers zeroed, in place
CK_KERNEL(SumAndZero) {
    const int n = nparam / 3;
    if (n < 1 || 3 * n != nparam) return 1;
    pairs(params, ndims, shapes, n, true, [](float *b, const float *g, float *out, int64_t lo, int64_t hi) {
#pragma omp simd
        for (int64_t i = lo; i < hi; ++i) {
            out[i] = g[i] + b[i];
            b[i] = 0.0f;
        }
    });
    return 0;
}
