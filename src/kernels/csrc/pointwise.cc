// A 1x1 unstrided convolution without bias over NCHW maps, y_b = w x_b for each image b (x_b as
// [C_in, H W]), and its backward pass (dx, dw) as one kernel each, on oneDNN's GEMM (gemm.h). Every
// convolution of the model ends in one: the 1x1 layers, and the product of the k x k and strided
// ones' columns (src/layers/conv2d.py). MindSpore runs them as oneDNN convolutions in plain NCHW,
// whose weight gradient is far slower than the forward. A batch shares its images among threads
// (each image one GEMM on one thread, each thread summing its images' weight gradients apart); a
// single image shares its GEMM's blocks.
#include <cstring>
#include <vector>

#include "gemm.h"
#include "kernel.h"

namespace {

struct Shape {
    int64_t batch, in, out, plane;
};

Shape shape_of(const int64_t *x, const int64_t *w) { return {x[0], x[1], w[0], x[2] * x[3]}; }

}  // namespace

// params: x [B, C_in, H, W], w [C_out, C_in] -> y [B, C_out, H, W]
CK_KERNEL(PointwiseForward) {
    const float *x = static_cast<const float *>(params[0]);
    const float *w = static_cast<const float *>(params[1]);
    float *y = static_cast<float *>(params[2]);
    const Shape s = shape_of(shapes[0], shapes[1]);
    const int64_t threads = ck::threads_for(s.batch * s.out * s.in * s.plane, s.batch);
    std::atomic<int> status{0};
    ck::share(s.batch, threads, [&](int64_t b, int64_t) {
        const float *xb = x + b * s.in * s.plane;
        float *yb = y + b * s.out * s.plane;
        const int r = threads > 1 ? ck::sgemm()('N', 'N', s.out, s.plane, s.in, 1.0f, w, s.in, xb, s.plane, 0.0f, yb, s.plane)
                                  : ck::gemm('N', 'N', s.out, s.plane, s.in, w, s.in, xb, s.plane, 0.0f, yb, s.plane);
        if (r) status = r;
    });
    return status;
}

// params: dy [B, C_out, H, W], x [B, C_in, H, W], w [C_out, C_in] -> dx [B, C_in, H, W], dw [C_out, C_in]
CK_KERNEL(PointwiseBackward) {
    const float *dy = static_cast<const float *>(params[0]);
    const float *x = static_cast<const float *>(params[1]);
    const float *w = static_cast<const float *>(params[2]);
    float *dx = static_cast<float *>(params[3]);
    float *dw = static_cast<float *>(params[4]);
    const Shape s = shape_of(shapes[1], shapes[2]);
    const int64_t weights = s.out * s.in;
    const int64_t threads = ck::threads_for(2 * s.batch * weights * s.plane, s.batch);
    // worker 0 sums into dw itself, each helper into its own buffer, added to dw at the end
    std::vector<float> partial(static_cast<size_t>((threads - 1) * weights));
    std::vector<char> started(static_cast<size_t>(threads), 0);
    std::atomic<int> status{0};
    ck::share(s.batch, threads, [&](int64_t b, int64_t worker) {
        const float *dyb = dy + b * s.out * s.plane;
        const float *xb = x + b * s.in * s.plane;
        float *dxb = dx + b * s.in * s.plane;
        float *dwt = worker ? partial.data() + (worker - 1) * weights : dw;
        const float beta = started[worker] ? 1.0f : 0.0f;
        started[worker] = 1;
        int r;
        if (threads > 1) {
            r = ck::sgemm()('T', 'N', s.in, s.plane, s.out, 1.0f, w, s.in, dyb, s.plane, 0.0f, dxb, s.plane);
            if (!r) r = ck::sgemm()('N', 'T', s.out, s.in, s.plane, 1.0f, dyb, s.plane, xb, s.plane, beta, dwt, s.in);
        } else {
            r = ck::gemm('T', 'N', s.in, s.plane, s.out, w, s.in, dyb, s.plane, 0.0f, dxb, s.plane);
            if (!r) r = ck::gemm('N', 'T', s.out, s.in, s.plane, dyb, s.plane, xb, s.plane, beta, dwt, s.in);
        }
        if (r) status = r;
    });
    if (!started[0]) std::memset(dw, 0, static_cast<size_t>(weights) * sizeof(float));
    for (int64_t t = 1; t < threads; ++t) {
        if (!started[t]) continue;
        const float *p = partial.data() + (t - 1) * weights;
#pragma omp simd
        for (int64_t j = 0; j < weights; ++j) dw[j] += p[j];
    }
    return status;
}
