// Branch-free float exp and erfc that the compiler vectorises inside a loop (libm's expf/erff are
// opaque calls that keep a loop scalar unless -ffast-math, which would change the rest of the code).
#pragma once
#include <cstdint>
#include <cstring>

namespace ck {

// exp(x) = 2^n * exp(r), n = round(x / ln2), r = x - n ln2 (ln2 split in two for exact
// reduction), exp(r) by its Taylor series to degree 7 on |r| <= ln2 / 2: about one ulp.
// Inputs below the smallest normal result are clamped, so exp of a very negative number is
// a tiny positive value instead of 0, far below anything a softmax or GELU can resolve.
static inline float vexp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    float n = (x * 1.44269504088896341f + shifter) - shifter;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

// erfc(z) for z >= 0: the Chebyshev fit of Numerical Recipes' erfcc, fractional error below
// 1.2e-7 everywhere, so 1 + erf(-z) = erfc(z) keeps its relative accuracy in the far tail
// (where 1 + erf(x) in float cancels to nothing).
static inline float verfc_nonneg(float z) {
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    return t * vexp(p - z * z);
}

// 2 * Phi(x) = 1 + erf(x / sqrt 2), the standard normal CDF doubled.
static inline float two_phi(float x) {
    float ax = x < 0.0f ? -x : x;
    float c = verfc_nonneg(ax * 0.70710678118654752f);
    return x < 0.0f ? c : 2.0f - c;
}

}  // namespace ck
