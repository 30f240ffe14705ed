// A linear layer, y = x w^T + b, and its backward pass (dx, dw, db) as one kernel each, on oneDNN's
// GEMM (gemm.h): MindSpore runs the same as MatMul + BiasAdd forward and two MatMuls and a bias
// gradient backward.
#include <cstring>

#include "column_sums.h"
#include "gemm.h"
#include "kernel.h"

// 1 when the GEMM is there (oneDNN loaded in this process), else 0: the Python side asks first.
extern "C" int CkGemmAvailable() { return ck::sgemm() != nullptr; }

// The threads a GEMM may use, the calling one included: MindSpore's runtime threads.
extern "C" void CkSetGemmThreads(int threads) { ck::gemm_threads() = threads > 1 ? threads : 1; }

// params: x [.., K], w [N, K], b [N] -> y [.., N]
CK_KERNEL(DenseForward) {
    const float *x = static_cast<const float *>(params[0]);
    const float *w = static_cast<const float *>(params[1]);
    const float *b = static_cast<const float *>(params[2]);
    float *y = static_cast<float *>(params[3]);
    int64_t rows, k;
    ck::rows_cols(ndims[0], shapes[0], &rows, &k);
    const int64_t n = shapes[1][0];
    for (int64_t r = 0; r < rows; ++r) std::memcpy(y + r * n, b, static_cast<size_t>(n) * sizeof(float));
    return ck::gemm('N', 'T', rows, n, k, x, k, w, k, 1.0f, y, n);
}

// params: dy [.., N], x [.., K], w [N, K] -> dx [.., K], dw [N, K], db [N]
CK_KERNEL(DenseBackward) {
    const float *dy = static_cast<const float *>(params[0]);
    const float *x = static_cast<const float *>(params[1]);
    const float *w = static_cast<const float *>(params[2]);
    float *dx = static_cast<float *>(params[3]);
    float *dw = static_cast<float *>(params[4]);
    float *db = static_cast<float *>(params[5]);
    int64_t rows, n;
    ck::rows_cols(ndims[0], shapes[0], &rows, &n);
    const int64_t k = shapes[2][1];
    int status = ck::gemm('N', 'N', rows, k, n, dy, n, w, k, 0.0f, dx, k);
    if (!status) status = ck::gemm('T', 'N', n, k, rows, dy, n, x, k, 0.0f, dw, k);
    ck::column_sums(dy, rows, n, db);
    return status;
}
