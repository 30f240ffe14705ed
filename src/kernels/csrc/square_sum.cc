// The sum of the squares of every element of any number of float32 tensors (a step's gradients),
// read where they lie: MindSpore's way is to concatenate them into one vector (a copy of all the
// gradients) and reduce its square. Sixteen float partial sums per block of a tensor (independent
// lanes, so the loop vectorises without reassociating one sum), the blocks added in double.
#include "kernel.h"

namespace {

constexpr int64_t kLanes = 16;
constexpr int64_t kBlock = 4096;

double square_sum(const float *x, int64_t n) {
    double total = 0.0;
    for (int64_t start = 0; start < n; start += kBlock) {
        const int64_t end = start + kBlock < n ? start + kBlock : n;
        float lanes[kLanes] = {};
        int64_t i = start;
        for (; i + kLanes <= end; i += kLanes)
            for (int64_t j = 0; j < kLanes; ++j) lanes[j] += x[i + j] * x[i + j];
        float block = 0.0f;
        for (; i < end; ++i) block += x[i] * x[i];
        for (int64_t j = 0; j < kLanes; ++j) block += lanes[j];
        total += block;
    }
    return total;
}

}  // namespace

// params: t_1, ..., t_n -> sum [1]
CK_KERNEL(SquareSum) {
    const int inputs = nparam - 1;
    double total = 0.0;
    for (int k = 0; k < inputs; ++k)
        total += square_sum(static_cast<const float *>(params[k]), ck::numel(ndims[k], shapes[k]));
    *static_cast<float *>(params[inputs]) = static_cast<float>(total);
    return 0;
}
