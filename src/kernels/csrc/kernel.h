// What every kernel shares: MindSpore's AOT calling convention (inputs first in `params`, then
// outputs; 0 returned for success) and the shapes of its arguments. Every kernel runs on the thread
// MindSpore calls it on: OpenMP teams spin between kernels and fight MindSpore's own threads, and a
// pool of sleeping threads gained nothing measurable in a whole step while its lifetime, tied to the
// library's static objects, could deadlock a process that loaded the library more than once.
#pragma once
#include <cstdint>

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

}  // namespace ck
