// Max pooling with PyTorch's semantics (nn.MaxPool2d: windows that reach into the padding see
// -inf there; the first maximum in row-major window order wins, a NaN wins over any number) and
// its gradient, which adds each output's gradient to the input element that won its window. The
// forward also returns the winners (their offset in the input plane), as PyTorch keeps them
// for its backward. MindSpore's formulation pads by concatenating edge copies, whose gradient
// is a slice, a full-size strided-slice gradient and a sum per copied edge.
#include <cmath>
#include <cstring>

#include "kernel.h"

namespace {

struct Window {
    int64_t size, stride, pad;
};

// from the window input's shape (size, stride, padding + 1): src/kernels/ops.py window_tensor
Window window(const int64_t *shape) { return {shape[0], shape[1], shape[2] - 1}; }

}  // namespace

// params: x [B, C, H, W], window -> y [B, C, OH, OW], argmax (int32)
// Each output row is built by one pass per window offset (i, j) over its columns, in row-major
// offset order (so the first maximum wins); the pass is a branch-free select the compiler
// vectorises, where a compare-and-branch per element mispredicts on half of them.
CK_KERNEL(MaxPoolForward) {
    const float *x = static_cast<const float *>(params[0]);
    const Window win = window(shapes[1]);
    float *y = static_cast<float *>(params[2]);
    int32_t *argmax = static_cast<int32_t *>(params[3]);
    const int64_t planes = shapes[0][0] * shapes[0][1], h = shapes[0][2], w = shapes[0][3];
    const int64_t oh = shapes[2][2], ow = shapes[2][3], s = win.stride;
    ck::parallel_for(planes, h * w + oh * ow * win.size, [&](int64_t lo, int64_t hi) {
    for (int64_t p = lo; p < hi; ++p) {
        const float *src = x + p * h * w;
        for (int64_t r = 0; r < oh; ++r) {
            float *best = y + (p * oh + r) * ow;
            int32_t *at = argmax + (p * oh + r) * ow;
            const int64_t r0 = r * s - win.pad, rs = r0 < 0 ? 0 : r0;
            for (int64_t c = 0; c < ow; ++c) {  // before any comparison: -inf at the window's first valid element
                const int64_t c0 = c * s - win.pad;
                best[c] = -INFINITY;
                at[c] = static_cast<int32_t>(rs * w + (c0 < 0 ? 0 : c0));
            }
            for (int64_t i = rs; i < r0 + win.size && i < h; ++i) {
                const float *row = src + i * w;
                for (int64_t j = 0; j < win.size; ++j) {
                    // the columns c whose window holds input column c * s - pad + j
                    const int64_t shift = j - win.pad;
                    const int64_t lo = shift < 0 ? (-shift + s - 1) / s : 0;
                    int64_t hi = (w - 1 - shift) / s + 1;
                    hi = hi > ow ? ow : hi;
                    const int32_t base = static_cast<int32_t>(i * w + shift);
#pragma omp simd
                    for (int64_t c = lo; c < hi; ++c) {
                        const float v = row[c * s + shift];
                        const bool take = v > best[c] || v != v;
                        best[c] = take ? v : best[c];
                        at[c] = take ? base + static_cast<int32_t>(c * s) : at[c];
                    }
                }
            }
        }
    }
    });
    return 0;
}

// params: dy [B, C, OH, OW], argmax [B, C, OH, OW], x (for its shape) -> dx
CK_KERNEL(MaxPoolBackward) {
    const float *dy = static_cast<const float *>(params[0]);
    const int32_t *argmax = static_cast<const int32_t *>(params[1]);
    float *dx = static_cast<float *>(params[3]);
    const int64_t planes = shapes[2][0] * shapes[2][1], plane = shapes[2][2] * shapes[2][3];
    const int64_t out_plane = shapes[0][2] * shapes[0][3];
    ck::parallel_for(planes, plane + out_plane, [&](int64_t lo, int64_t hi) {
        std::memset(dx + lo * plane, 0, static_cast<size_t>((hi - lo) * plane) * sizeof(float));
        for (int64_t p = lo; p < hi; ++p) {
            float *d = dx + p * plane;
            const float *g = dy + p * out_plane;
            const int32_t *a = argmax + p * out_plane;
            for (int64_t o = 0; o < out_plane; ++o) d[a[o]] += g[o];
        }
    });
    return 0;
}
