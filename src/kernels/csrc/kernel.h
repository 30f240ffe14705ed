// What every kernel shares: MindSpore's AOT calling convention (inputs first in `params`, then
// outputs; 0 returned for success), the shapes of its arguments, and how a kernel splits its work.
// A kernel runs on the thread MindSpore calls it on; one with enough work to pay for starting threads
// (parallel_for) also starts threads for parts of it and joins them before it returns. No thread
// outlives a call: OpenMP teams spin between kernels and fight MindSpore's own threads, and a pool
// whose lifetime is tied to the library's static objects can deadlock a process that loads the
// library more than once.
#pragma once
#include <sched.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <system_error>
#include <thread>
#include <vector>

#define CK_KERNEL(name)                                                                                \
    extern "C" int name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, \
                        void *stream, void *extra)

namespace ck {

// Rows and the length of the last axis of a kernel argument.
static inline void rows_cols(int ndim, const int64_t *shape, int64_t *rows, int64_t *cols) {
    int64_t r = 1;
    for (int i = 0; i + 1 < ndim; ++i) r *= shape[i];
    *rows = r;
    *cols = ndim > 0 ? shape[ndim - 1] : 1;
}

static inline int64_t numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
}

// The threads a large kernel splits over: CONFORMER_KERNEL_THREADS when set (1: every kernel on the
// calling thread alone), else the CPUs this process may run on, at most 8.
static inline int kernel_threads() {
    if (const char *env = std::getenv("CONFORMER_KERNEL_THREADS")) {
        const int n = std::atoi(env);
        return n > 0 ? n : 1;
    }
    cpu_set_t set;
    const int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    return cpus < 8 ? (cpus > 0 ? cpus : 1) : 8;
}

// How many parts `n` items of about `cost` values each are split into: 1 below about a quarter of a
// million values, where starting a thread (tens of microseconds) costs more than it saves.
static inline int parts_for(int64_t n, int64_t cost) {
    const int64_t min_values = int64_t{1} << 18;
    if (n < 2 || n * cost < min_values) return 1;
    const int t = kernel_threads();
    return n < t ? static_cast<int>(n) : t;
}

// fn(lo, hi, part) over `parts` contiguous ranges of [0, n): part 0 on the calling thread, the others on
// threads started here (on the calling thread, too, if one cannot be started), all joined on return.
template <class F>
void run_parts(int64_t n, int parts, F fn) {
    std::vector<std::thread> started;
    std::vector<int> inline_parts;
    for (int k = 1; k < parts; ++k) {
        try {
            started.emplace_back(fn, n * k / parts, n * (k + 1) / parts, k);
        } catch (const std::system_error &) {
            inline_parts.push_back(k);
        }
    }
    fn(int64_t{0}, n / parts, 0);
    for (int k : inline_parts) fn(n * k / parts, n * (k + 1) / parts, k);
    for (auto &t : started) t.join();
}

// fn(lo, hi) over [0, n), split when the work (n items of about `cost` values) pays for it
template <class F>
void parallel_for(int64_t n, int64_t cost, F fn) {
    run_parts(n, parts_for(n, cost), [&fn](int64_t lo, int64_t hi, int) { fn(lo, hi); });
}

// fn(t, lo, hi) over the elements [lo, hi) of each of `n` tensors, `numel(t)` elements each: the
// tensors' elements taken as one range and split like parallel_for by `cost` per value, so that a
// step's many small tensors (its parameters) are split as evenly as one large one
template <class N, class F>
void tensor_ranges(int n, N numel, int64_t cost, F fn) {
    std::vector<int64_t> offsets(static_cast<size_t>(n) + 1, 0);
    for (int t = 0; t < n; ++t) offsets[t + 1] = offsets[t] + numel(t);
    const int64_t total = offsets[n];
    run_parts(total, parts_for(total, cost), [&](int64_t lo, int64_t hi, int) {
        for (int t = 0; t < n; ++t) {
            const int64_t a = offsets[t] > lo ? offsets[t] : lo;
            const int64_t b = offsets[t + 1] < hi ? offsets[t + 1] : hi;
            if (a < b) fn(t, a - offsets[t], b - offsets[t]);
        }
    });
}

// params: x [.., D], b [D] -> y [.., D] with y[r, j] = f(x[r, j] + b[j]): a linear layer's bias, alone or
// followed by an elementwise function; split like parallel_for by `cost` per value
template <class F>
int bias_rows(void **params, int *ndims, int64_t **shapes, int64_t cost, F f) {
    const float *x = static_cast<const float *>(params[0]);
    const float *b = static_cast<const float *>(params[1]);
    float *y = static_cast<float *>(params[2]);
    int64_t rows, d;
    rows_cols(ndims[0], shapes[0], &rows, &d);
    parallel_for(rows, cost * d, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
            const float *xr = x + r * d;
            float *yr = y + r * d;
#pragma omp simd
            for (int64_t j = 0; j < d; ++j) yr[j] = f(xr[j] + b[j]);
        }
    });
    return 0;
}

// out[j] = the sum of totals[stride * part + j] over the parts (each part's sums, added up in order)
static inline void sum_parts(const double *totals, int parts, int64_t stride, int64_t d, float *out) {
    for (int64_t j = 0; j < d; ++j) {
        double total = 0.0;
        for (int part = 0; part < parts; ++part) total += totals[stride * part + j];
        out[j] = static_cast<float>(total);
    }
}

// out[j] = the sum over `rows` rows of the values add_row(r, p) adds into p[0..d) for row r (a linear
// layer's bias gradient): in float over blocks of 64 rows (a vectorised add per row), in double across
// blocks and across the parts the rows are split into, so a sum over thousands of rows keeps float's
// precision.
template <class AddRow>
void column_sums(int64_t rows, int64_t d, int64_t cost_per_value, float *out, AddRow add_row) {
    const int64_t block = 64, blocks = (rows + block - 1) / block;
    const int parts = parts_for(blocks, block * d * cost_per_value);
    std::vector<double> totals(static_cast<size_t>(d * parts), 0.0);
    run_parts(blocks, parts, [&](int64_t lo, int64_t hi, int part) {
        std::vector<float> sums(static_cast<size_t>(d));
        float *p = sums.data();
        double *t = totals.data() + d * part;
        for (int64_t k = lo; k < hi; ++k) {
            const int64_t r0 = k * block, r1 = r0 + block < rows ? r0 + block : rows;
            for (int64_t j = 0; j < d; ++j) p[j] = 0.0f;
            for (int64_t r = r0; r < r1; ++r) add_row(r, p);
            for (int64_t j = 0; j < d; ++j) t[j] += p[j];
        }
    });
    sum_parts(totals.data(), parts, d, d, out);
}

}  // namespace ck
