// Row-major float GEMM, C = op(A) op(B) + beta C, by oneDNN's dnnl_sgemm: the oneDNN that MindSpore's
// CPU backend has already loaded (libmindspore_cpu.so needs it), found by its soname at run time, so
// this library neither links against the wheel nor loads a second copy; without it gemm_available()
// says so and the Python side keeps MindSpore's MatMul. The wheel's oneDNN runs dnnl_sgemm on the
// calling thread, while MindSpore splits its own MatMul over its runtime threads, so a product big
// enough to pay for starting threads is shared by the calling thread and as many helpers as MindSpore
// has threads besides it (set_gemm_threads): all take blocks of C's rows from one counter, so a helper
// the scheduler starts late (a busy machine) takes fewer blocks instead of holding the caller up. No
// pool outlives the call: nothing spins between kernels against MindSpore's threads, and nothing is
// tied to the library's lifetime.
#pragma once
#include <dlfcn.h>

#include <atomic>
#include <cstdint>
#include <system_error>
#include <thread>
#include <vector>

namespace ck {

using SgemmFn = int (*)(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                        int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);

inline SgemmFn sgemm() {
    static const SgemmFn fn = [] {
        void *handle = dlopen("libdnnl.so.3", RTLD_NOW | RTLD_NOLOAD);
        return handle ? reinterpret_cast<SgemmFn>(dlsym(handle, "dnnl_sgemm")) : nullptr;
    }();
    return fn;
}

// Below this many multiply-adds per thread another thread costs more than it saves.
constexpr int64_t kMacsPerThread = int64_t(1) << 21;
// Blocks of C's rows per thread: more balance a late helper, fewer repack the other operand less.
constexpr int64_t kBlocksPerThread = 2;

inline std::atomic<int> &gemm_threads() {
    static std::atomic<int> threads{1};
    return threads;
}

// C [m, n] = op(A) [m, k] op(B) [k, n] + beta C; 'T' takes A as [k, m] (B as [n, k]). Returns 0, or
// oneDNN's nonzero status.
static inline int gemm(char ta, char tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                       const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    const SgemmFn f = sgemm();
    if (!f) return 1;
    if (m == 0 || n == 0) return 0;
    int64_t threads = gemm_threads();
    while (threads > 1 && (m * n * k < threads * kMacsPerThread || m < threads * 16)) --threads;
    if (threads == 1) return f(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
    const int64_t blocks = threads * kBlocksPerThread;
    const int64_t rows = ((m + blocks - 1) / blocks + 15) / 16 * 16;  // whole 16-row panels
    const int64_t count = (m + rows - 1) / rows;
    std::atomic<int64_t> next{0};
    std::atomic<int> status{0};
    auto work = [&] {
        for (int64_t i; (i = next.fetch_add(1)) < count;) {
            const int64_t r0 = i * rows, r = r0 + rows < m ? rows : m - r0;
            const float *ai = ta == 'N' ? a + r0 * lda : a + r0;
            const int s = f(ta, tb, r, n, k, 1.0f, ai, lda, b, ldb, beta, c + r0 * ldc, ldc);
            if (s) status = s;
        }
    };
    std::vector<std::thread> helpers;
    try {
        for (int64_t t = 1; t < threads; ++t) helpers.emplace_back(work);
    } catch (const std::system_error &) {  // no more threads to be had: those running take every block
    }
    work();
    for (std::thread &helper : helpers) helper.join();
    return status;
}

}  // namespace ck
