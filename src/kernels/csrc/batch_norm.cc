// BatchNorm over the channels of an NCHW map: the training forward (the batch's statistics, and the
// running statistics moved towards them), its backward pass, and the inference forward (the running
// statistics); each also followed by a ReLU (the *Relu* kernels: the CNN branch's BatchNorm -> ReLU
// pairs, one kernel and no intermediate map each way). Per-channel sums run over N * H * W values: in
// float over each image's H * W values (vectorised), in double across the images.
#include <cmath>

#include "kernel.h"

namespace {

// x [N, C, H, W] (any trailing axes): images, channels, values per channel and image.
struct Map {
    int64_t n, c, hw;
};

Map map_of(int ndim, const int64_t *shape) {
    Map m{ndim > 0 ? shape[0] : 1, ndim > 1 ? shape[1] : 1, 1};
    for (int i = 2; i < ndim; ++i) m.hw *= shape[i];
    return m;
}

// y = (x - mu) * scale + b over channel c of every image, then max(y, 0) with kRelu
template <bool kRelu>
void normalise_channel(const Map &m, int64_t c, const float *x, float *y, float mu, float scale, float b) {
    for (int64_t n = 0; n < m.n; ++n) {
        const float *xc = x + (n * m.c + c) * m.hw;
        float *yc = y + (n * m.c + c) * m.hw;
#pragma omp simd
        for (int64_t i = 0; i < m.hw; ++i) {
            const float v = (xc[i] - mu) * scale + b;
            yc[i] = kRelu ? (v > 0.0f ? v : 0.0f) : v;
        }
    }
}

// params: x, gamma [C], beta [C], moving_mean [C], moving_var [C], momentum [1] (the weight of the
// batch's statistics), eps [1] -> y, mean [C], rstd [C], new moving_mean [C], new moving_var [C]
// (the running variance moves towards the unbiased batch variance, as MindSpore's and PyTorch's do)
template <bool kRelu>
int train_forward(void **params, int *ndims, int64_t **shapes) {
    const float *x = static_cast<const float *>(params[0]);
    const float *gamma = static_cast<const float *>(params[1]);
    const float *beta = static_cast<const float *>(params[2]);
    const float *moving_mean = static_cast<const float *>(params[3]);
    const float *moving_var = static_cast<const float *>(params[4]);
    const float momentum = *static_cast<const float *>(params[5]);
    const float eps = *static_cast<const float *>(params[6]);
    float *y = static_cast<float *>(params[7]);
    float *mean_out = static_cast<float *>(params[8]);
    float *rstd_out = static_cast<float *>(params[9]);
    float *new_mean = static_cast<float *>(params[10]);
    float *new_var = static_cast<float *>(params[11]);
    const Map m = map_of(ndims[0], shapes[0]);
    const int64_t count = m.n * m.hw;
    ck::parallel_for(m.c, 2 * count, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c) {
        // one pass: the sums of d = x - k and d * d, k a value of the channel (so the variance
        // does not cancel when the mean is far from 0), in float per image and in double across
        const float k = x[c * m.hw];
        double s = 0.0, ss = 0.0;
        for (int64_t n = 0; n < m.n; ++n) {
            const float *xc = x + (n * m.c + c) * m.hw;
            float a = 0.0f, b = 0.0f;
#pragma omp simd reduction(+ : a, b)
            for (int64_t i = 0; i < m.hw; ++i) {
                float d = xc[i] - k;
                a += d;
                b += d * d;
            }
            s += a;
            ss += b;
        }
        const double shift = s / count, mean = k + shift;
        const double q = ss - s * shift > 0.0 ? ss - s * shift : 0.0;  // the sum of (x - mean)^2
        const float rstd = static_cast<float>(1.0 / std::sqrt(q / count + eps));
        normalise_channel<kRelu>(m, c, x, y, static_cast<float>(mean), rstd * gamma[c], beta[c]);
        mean_out[c] = static_cast<float>(mean);
        rstd_out[c] = rstd;
        const double unbiased = count > 1 ? q / (count - 1) : q;
        new_mean[c] = static_cast<float>((1.0 - momentum) * moving_mean[c] + momentum * mean);
        new_var[c] = static_cast<float>((1.0 - momentum) * moving_var[c] + momentum * unbiased);
    }
    });
    return 0;
}

// params: dy, x, mean [C], rstd [C], gamma [C], with kRelu also y (the forward's output, whose
// zeros block the gradient) -> dx, dgamma [C], dbeta [C]
template <bool kRelu>
int train_backward(void **params, int *ndims, int64_t **shapes) {
    const float *dy = static_cast<const float *>(params[0]);
    const float *x = static_cast<const float *>(params[1]);
    const float *mean = static_cast<const float *>(params[2]);
    const float *rstd = static_cast<const float *>(params[3]);
    const float *gamma = static_cast<const float *>(params[4]);
    const float *y = kRelu ? static_cast<const float *>(params[5]) : nullptr;
    const int out = kRelu ? 6 : 5;
    float *dx = static_cast<float *>(params[out]);
    float *dgamma = static_cast<float *>(params[out + 1]);
    float *dbeta = static_cast<float *>(params[out + 2]);
    const Map m = map_of(ndims[0], shapes[0]);
    const int64_t count = m.n * m.hw;
    ck::parallel_for(m.c, 3 * count, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c) {
        const float mu = mean[c], rs = rstd[c];
        double sum_dy = 0.0, sum_dy_xhat = 0.0;  // in float per image, in double across
        for (int64_t n = 0; n < m.n; ++n) {
            const float *xc = x + (n * m.c + c) * m.hw;
            const float *gc = dy + (n * m.c + c) * m.hw;
            const float *yc = kRelu ? y + (n * m.c + c) * m.hw : nullptr;
            float a = 0.0f, b = 0.0f;
#pragma omp simd reduction(+ : a, b)
            for (int64_t i = 0; i < m.hw; ++i) {
                const float g = kRelu ? (yc[i] > 0.0f ? gc[i] : 0.0f) : gc[i];
                a += g;
                b += g * ((xc[i] - mu) * rs);
            }
            sum_dy += a;
            sum_dy_xhat += b;
        }
        dgamma[c] = static_cast<float>(sum_dy_xhat);
        dbeta[c] = static_cast<float>(sum_dy);
        const float k = gamma[c] * rs;
        const float mean_dy = static_cast<float>(sum_dy / count);
        const float mean_dy_xhat = static_cast<float>(sum_dy_xhat / count);
        for (int64_t n = 0; n < m.n; ++n) {
            const float *xc = x + (n * m.c + c) * m.hw;
            const float *gc = dy + (n * m.c + c) * m.hw;
            const float *yc = kRelu ? y + (n * m.c + c) * m.hw : nullptr;
            float *dc = dx + (n * m.c + c) * m.hw;
#pragma omp simd
            for (int64_t i = 0; i < m.hw; ++i) {
                const float g = kRelu ? (yc[i] > 0.0f ? gc[i] : 0.0f) : gc[i];
                dc[i] = k * (g - mean_dy - (xc[i] - mu) * rs * mean_dy_xhat);
            }
        }
    }
    });
    return 0;
}

// params: x, gamma [C], beta [C], moving_mean [C], moving_var [C], eps [1] -> y
template <bool kRelu>
int infer_forward(void **params, int *ndims, int64_t **shapes) {
    const float *x = static_cast<const float *>(params[0]);
    const float *gamma = static_cast<const float *>(params[1]);
    const float *beta = static_cast<const float *>(params[2]);
    const float *moving_mean = static_cast<const float *>(params[3]);
    const float *moving_var = static_cast<const float *>(params[4]);
    const float eps = *static_cast<const float *>(params[5]);
    float *y = static_cast<float *>(params[6]);
    const Map m = map_of(ndims[0], shapes[0]);
    ck::parallel_for(m.c, m.n * m.hw, [&](int64_t lo, int64_t hi) {
        for (int64_t c = lo; c < hi; ++c)
            normalise_channel<kRelu>(m, c, x, y, moving_mean[c], gamma[c] / std::sqrt(moving_var[c] + eps),
                                     beta[c]);
    });
    return 0;
}

}  // namespace

CK_KERNEL(BatchNormTrainForward) { return train_forward<false>(params, ndims, shapes); }
CK_KERNEL(BatchNormReluTrainForward) { return train_forward<true>(params, ndims, shapes); }
CK_KERNEL(BatchNormTrainBackward) { return train_backward<false>(params, ndims, shapes); }
CK_KERNEL(BatchNormReluTrainBackward) { return train_backward<true>(params, ndims, shapes); }
CK_KERNEL(BatchNormInferForward) { return infer_forward<false>(params, ndims, shapes); }
CK_KERNEL(BatchNormReluInferForward) { return infer_forward<true>(params, ndims, shapes); }
