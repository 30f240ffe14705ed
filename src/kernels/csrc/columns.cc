// The columns (im2col) of a k x k convolution with stride s and zero padding p, as the CPU
// formulation (src/layers/conv2d.py) multiplies them by its weight: for each kernel offset (i, j),
// the out_h x out_w values x[b, c, r s + i - p, q s + j - p], stacked offset-major:
// col [B, k * k * C, out_h, out_w]. MindSpore would pad by concatenation (whose gradient is a slice
// per part), and need a space-to-depth transpose, a padded weight and a product over its zero rows.
//
// Each channel's map is first copied, zero-padded, into s column phases: phase f holds the padded
// columns f, f + s, f + 2s, ... So every output row of every offset is one contiguous run of a
// phase (offset j reads phase j mod s from column j div s on), copied by a loop the compiler
// vectorises. The backward adds each row of the gradient into the phases, then the phases back
// into the map.
#include <cstddef>
#include <vector>

#include "kernel.h"

namespace {

struct Geometry {
    int64_t batch, channels, rows, width, k, stride, pad, out_h, out_w;
    int64_t padded_rows, phase_w;  // the phases: s x padded_rows x phase_w

    int64_t phases_size() const { return stride * padded_rows * phase_w; }
    // where padded column `col` of padded row `row` sits in the phases
    int64_t at(int64_t row, int64_t col) const {
        return ((col % stride) * padded_rows + row) * phase_w + col / stride;
    }
};

// x [B, C, H, W], the window's shape (k, s, p + 1), col [B, k * k * C, out_h, out_w]
Geometry geometry(const int64_t *x, const int64_t *window, const int64_t *col) {
    Geometry g{x[0], x[1], x[2], x[3], window[0], window[1], window[2] - 1, col[2], col[3], 0, 0};
    g.padded_rows = g.rows + 2 * g.pad;
    g.phase_w = (g.width + 2 * g.pad + g.stride - 1) / g.stride;
    return g;
}

// The padded columns f, f + s, ... of phase f that hold columns of x: u in [u0, u1), x column f + s u - p.
void phase_span(const Geometry &g, int64_t f, int64_t *u0, int64_t *u1) {
    const int64_t s = g.stride;
    *u0 = g.pad > f ? (g.pad - f + s - 1) / s : 0;
    const int64_t end = (g.width + g.pad - f + s - 1) / s;
    *u1 = end < g.phase_w ? end : g.phase_w;
}

// row y of a channel of x into the phases (padded row y + pad)
void pack_row(const Geometry &g, const float *src, float *ph, int64_t y) {
    for (int64_t f = 0; f < g.stride; ++f) {
        int64_t u0, u1;
        phase_span(g, f, &u0, &u1);
        float *d = ph + g.at(y + g.pad, f);
        for (int64_t u = u0; u < u1; ++u) d[u] = src[f + g.stride * u - g.pad];
    }
}

// the reverse: padded row y + pad of the phases into row y of a channel of dx
void unpack_row(const Geometry &g, const float *ph, float *dst, int64_t y) {
    for (int64_t f = 0; f < g.stride; ++f) {
        int64_t u0, u1;
        phase_span(g, f, &u0, &u1);
        const float *sr = ph + g.at(y + g.pad, f);
        for (int64_t u = u0; u < u1; ++u) dst[f + g.stride * u - g.pad] = sr[u];
    }
}

}  // namespace

// params: x, window -> col
CK_KERNEL(ColumnsForward) {
    const float *x = static_cast<const float *>(params[0]);
    float *col = static_cast<float *>(params[2]);
    const Geometry g = geometry(shapes[0], shapes[1], shapes[2]);
    const int64_t offsets = g.k * g.k, map = g.rows * g.width, plane = g.out_h * g.out_w, s = g.stride;
    ck::parallel_for(g.batch * g.channels, map + offsets * plane, [&](int64_t lo, int64_t hi) {
        std::vector<float> phases(static_cast<size_t>(g.phases_size()), 0.0f);  // the padding stays zero
        float *ph = phases.data();
        for (int64_t bc = lo; bc < hi; ++bc) {
            const int64_t b = bc / g.channels, c = bc % g.channels;
            const float *src = x + bc * map;
            for (int64_t y = 0; y < g.rows; ++y) pack_row(g, src + y * g.width, ph, y);
            for (int64_t o = 0; o < offsets; ++o) {
                const int64_t i = o / g.k, j = o % g.k;
                float *d = col + ((b * offsets + o) * g.channels + c) * plane;
                for (int64_t r = 0; r < g.out_h; ++r) {
                    const float *sr = ph + g.at(r * s + i, j);
                    float *dr = d + r * g.out_w;
#pragma omp simd
                    for (int64_t q = 0; q < g.out_w; ++q) dr[q] = sr[q];
                }
            }
        }
    });
    return 0;
}

// params: dcol, x (for its shape), window -> dx
CK_KERNEL(ColumnsBackward) {
    const float *dcol = static_cast<const float *>(params[0]);
    float *dx = static_cast<float *>(params[3]);
    const Geometry g = geometry(shapes[1], shapes[2], shapes[0]);
    const int64_t offsets = g.k * g.k, map = g.rows * g.width, plane = g.out_h * g.out_w, s = g.stride;
    ck::parallel_for(g.batch * g.channels, map + offsets * plane, [&](int64_t lo, int64_t hi) {
        std::vector<float> phases(static_cast<size_t>(g.phases_size()));
        float *ph = phases.data();
        for (int64_t bc = lo; bc < hi; ++bc) {
            const int64_t b = bc / g.channels, c = bc % g.channels;
            for (int64_t n = 0; n < g.phases_size(); ++n) ph[n] = 0.0f;
            for (int64_t o = 0; o < offsets; ++o) {
                const int64_t i = o / g.k, j = o % g.k;
                const float *sc = dcol + ((b * offsets + o) * g.channels + c) * plane;
                for (int64_t r = 0; r < g.out_h; ++r) {
                    const float *sr = sc + r * g.out_w;
                    float *dr = ph + g.at(r * s + i, j);
#pragma omp simd
                    for (int64_t q = 0; q < g.out_w; ++q) dr[q] += sr[q];
                }
            }
            float *dst = dx + bc * map;
            for (int64_t y = 0; y < g.rows; ++y) unpack_row(g, ph, dst + y * g.width, y);
        }
    });
    return 0;
}
