// The one exported control of the kernels' thread pool (pool.h).
#include "pool.h"

// The threads the kernels use from now on (1 = the calling thread only), so that both choices can be
// timed in one process (scripts/bench.py --parts kernel_threads); returns the number in use.
extern "C" int SetKernelThreads(int threads) {
    ck::Pool::get().set_parts(threads);
    return ck::Pool::get().parts();
}
