// Row-major float GEMM, C = op(A) op(B) + beta C, by oneDNN's dnnl_sgemm: the oneDNN that MindSpore's
// CPU backend has already loaded (libmindspore_cpu.so needs it), found by its soname at run time, so
// this library neither links against the wheel nor loads a second copy; without it gemm_available()
// says so and the Python side keeps MindSpore's MatMul. The wheel's oneDNN runs dnnl_sgemm on the
// calling thread, while MindSpore splits its own MatMul over its runtime threads, so a product big
// enough to pay for starting threads is shared by the calling thread and as many helpers as MindSpore
// has threads besides it (CkSetGemmThreads): all take blocks of the work from one counter, so a helper
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

// How many threads to share `macs` multiply-adds in `blocks` pieces: MindSpore's count, fewer when a
// thread would get too little work.
inline int64_t threads_for(int64_t macs, int64_t blocks) {
    int64_t threads = gemm_threads();
    while (threads > 1 && (macs < threads * kMacsPerThread || blocks < threads)) --threads;
    return threads;
}

// fn(i, worker) for i in [0, count), on `threads` threads (the caller is worker 0, helpers 1..): each
// takes the next i from one counter until none is left.
template <class Fn>
void share(int64_t count, int64_t threads, const Fn &fn) {
    std::atomic<int64_t> next{0};
    auto work = [&](int64_t worker) {
        for (int64_t i; (i = next.fetch_add(1)) < count;) fn(i, worker);
    };
    std::vector<std::thread> helpers;
    try {
        for (int64_t t = 1; t < threads; ++t) helpers.emplace_back(work, t);
    } catch (const std::system_error &) {  // no more threads to be had: those running take every block
    }
    work(0);
    for (std::thread &helper : helpers) helper.join();
}

// C [m, n] = op(A) [m, k] op(B) [k, n] + beta C; 'T' takes A as [k, m] (B as [n, k]). Shared among
// threads in blocks of C's rows, or of its columns when it has fewer rows than columns. Returns 0,
// or oneDNN's nonzero status.
inline int gemm(char ta, char tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    const SgemmFn f = sgemm();
    if (!f) return 1;
    if (m == 0 || n == 0) return 0;
    const bool by_rows = m >= n;
    const int64_t extent = by_rows ? m : n;
    const int64_t threads = threads_for(m * n * k, extent / 16);
    if (threads == 1) return f(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
    const int64_t blocks = threads * kBlocksPerThread;
    const int64_t size = ((extent + blocks - 1) / blocks + 15) / 16 * 16;  // whole 16-wide panels
    std::atomic<int> status{0};
    share((extent + size - 1) / size, threads, [&](int64_t i, int64_t) {
        const int64_t at = i * size, len = at + size < extent ? size : extent - at;
        const int s = by_rows ? f(ta, tb, len, n, k, 1.0f, ta == 'N' ? a + at * lda : a + at, lda, b, ldb, beta,
                                  c + at * ldc, ldc)
                              : f(ta, tb, m, len, k, 1.0f, a, lda, tb == 'N' ? b + at : b + at * ldb, ldb, beta,
                                  c + at, ldc);
        if (s) status = s;
    });
    return status;
}

}  // namespace ck
