// Transpose (permute) of a float32 tensor by a permutation given as an int64 input tensor.
// MindSpore's CPU Transpose precomputes the source offset of every output element and keeps that table
// for the life of the graph (8 bytes per element); this kernel computes offsets as it goes.
//
// The permutation is first reduced: axes of size 1 are dropped and input axes that stay neighbours in
// the output are merged. What is left is either a copy of contiguous runs (the input's last axis stays
// last) or, for every index of the other axes, a 2-D transpose between the output's last axis and the
// input's last axis, done in square tiles so that both the reads and the writes stay in cache lines.
#include <cstring>

#include "kernel.h"

namespace {

constexpr int kMaxDims = 8;
constexpr int64_t kTile = 16;

struct Reduced {
    int n = 0;
    int64_t size[kMaxDims];     // output axis sizes after the reduction
    int64_t in_step[kMaxDims];  // the input stride of each output axis
};

// perm[i]: the input axis that becomes output axis i.
bool reduce(int ndim, const int64_t *shape, const int64_t *perm, Reduced *r) {
    if (ndim > kMaxDims) return false;
    int64_t stride[kMaxDims];
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; --i) {
        stride[i] = s;
        s *= shape[i];
    }
    r->n = 0;
    for (int i = 0; i < ndim; ++i) {
        const int64_t axis = perm[i];
        if (axis < 0 || axis >= ndim) return false;
        if (shape[axis] == 1) continue;
        // merge with the previous output axis when it is the input axis just before this one (its
        // stride is exactly this one's stride times this one's size)
        if (r->n > 0 && r->in_step[r->n - 1] == stride[axis] * shape[axis]) {
            r->size[r->n - 1] *= shape[axis];
            r->in_step[r->n - 1] = stride[axis];
            continue;
        }
        r->size[r->n] = shape[axis];
        r->in_step[r->n] = stride[axis];
        ++r->n;
    }
    return true;
}

// The number of index combinations of `n` outer axes of sizes `size`.
int64_t outer_count(int n, const int64_t *size) {
    int64_t count = 1;
    for (int i = 0; i < n; ++i) count *= size[i];
    return count;
}

// Walks the combinations [k0, k1) (in order) of the indices of `n` outer axes (sizes `size`, input steps
// `in_step`, output steps `out_step`) and calls body(in_offset, out_offset) for each.
template <typename Body>
void for_each_outer(int n, const int64_t *size, const int64_t *in_step, const int64_t *out_step, int64_t k0,
                    int64_t k1, Body body) {
    int64_t index[kMaxDims] = {0};
    int64_t in_off = 0, out_off = 0;
    for (int64_t i = n - 1, rest = k0; i >= 0; --i) {  // k0 in the axes' mixed radix
        index[i] = rest % size[i];
        rest /= size[i];
        in_off += index[i] * in_step[i];
        out_off += index[i] * out_step[i];
    }
    for (int64_t k = k0; k < k1; ++k) {
        body(in_off, out_off);
        for (int i = n - 1; i >= 0; --i) {
            if (++index[i] < size[i]) {
                in_off += in_step[i];
                out_off += out_step[i];
                break;
            }
            in_off -= in_step[i] * (size[i] - 1);
            out_off -= out_step[i] * (size[i] - 1);
            index[i] = 0;
        }
    }
}

void transpose(const float *x, float *y, const Reduced &r) {
    const int n = r.n;
    if (n == 0) {
        y[0] = x[0];
        return;
    }
    int64_t out_step[kMaxDims];
    int64_t s = 1;
    for (int i = n - 1; i >= 0; --i) {
        out_step[i] = s;
        s *= r.size[i];
    }
    if (r.in_step[n - 1] == 1) {  // runs of the input's last axis stay contiguous
        const int64_t run = r.size[n - 1];
        ck::parallel_for(outer_count(n - 1, r.size), 2 * run, [&](int64_t k0, int64_t k1) {
            for_each_outer(n - 1, r.size, r.in_step, out_step, k0, k1, [&](int64_t in_off, int64_t out_off) {
                std::memcpy(y + out_off, x + in_off, run * sizeof(float));
            });
        });
        return;
    }
    // the output axis `q` that walks the input's last axis (step 1), and the output's last axis `n - 1`
    int q = 0;
    while (r.in_step[q] != 1) ++q;
    int64_t size[kMaxDims], in_step[kMaxDims], o_step[kMaxDims];
    int m = 0;
    for (int i = 0; i < n - 1; ++i) {
        if (i == q) continue;
        size[m] = r.size[i];
        in_step[m] = r.in_step[i];
        o_step[m] = out_step[i];
        ++m;
    }
    const int64_t rows = r.size[q], cols = r.size[n - 1];
    const int64_t out_row = out_step[q], in_col = r.in_step[n - 1];
    ck::parallel_for(outer_count(m, size), 2 * rows * cols, [&](int64_t k0, int64_t k1) {
    for_each_outer(m, size, in_step, o_step, k0, k1, [&](int64_t in_off, int64_t out_off) {
        const float *src = x + in_off;
        float *dst = y + out_off;
        // dst[i * out_row + j] = src[j * in_col + i]
        for (int64_t i0 = 0; i0 < rows; i0 += kTile) {
            const int64_t i1 = i0 + kTile < rows ? i0 + kTile : rows;
            for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
                const int64_t j1 = j0 + kTile < cols ? j0 + kTile : cols;
                for (int64_t i = i0; i < i1; ++i) {
                    float *d = dst + i * out_row;
                    const float *sp = src + i;
                    for (int64_t j = j0; j < j1; ++j) d[j] = sp[j * in_col];
                }
            }
        }
    });
    });
}

}  // namespace

// params: x, perm (int64, one entry per axis of x) -> y
CK_KERNEL(TransposeForward) {
    const float *x = static_cast<const float *>(params[0]);
    const int64_t *perm = static_cast<const int64_t *>(params[1]);
    float *y = static_cast<float *>(params[2]);
    if (ndims[1] != 1 || shapes[1][0] != ndims[0]) return 1;
    Reduced r;
    if (!reduce(ndims[0], shapes[0], perm, &r)) return 1;
    transpose(x, y, r);
    return 0;
}
