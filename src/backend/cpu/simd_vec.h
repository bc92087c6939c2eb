// Float vectors of 16 (AVX-512), 8 (AVX2) and 1 (scalar) lanes behind one interface, so a kernel
// body written once against `Vec` compiles for each instruction set (attention, activations,
// the float GEMM tile). Elements load from f32, IEEE halves (uint16_t) and bfloat16 (Bf16).
// Each struct's functions carry its target, so it is used from code compiled for the same one.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "quant/quant.h"

namespace moenav::cpu::simd {

// A bfloat16 element (the top half of an f32), distinct from uint16_t, which holds IEEE halves.
struct Bf16 {
  uint16_t bits;
};

// One element as float: f32 as is, uint16_t as an IEEE half, Bf16 widened.
inline float to_f32(float x) { return x; }
inline float to_f32(uint16_t half) { return quant::fp16_to_fp32(half); }
inline float to_f32(Bf16 x) { return quant::bf16_to_fp32(x.bits); }

// exp(x) for x <= 88 to about 2 ulp (Cephes expf: 2^n * e^r with |r| <= ln2/2); inputs below
// -87 give exp(-87), the caller zeroes what must be exactly 0.
constexpr float kExpLow = -87.0f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2High = 0.693359375f;
constexpr float kLn2Low = -2.12194440e-4f;
constexpr float kExpPoly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                               4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

#if defined(__x86_64__) && defined(__GNUC__)

// GCC 12's _mm512_reduce_* intrinsics trip -Wmaybe-uninitialized in its own headers.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma")
namespace avx512 {
struct Vec {
  static constexpr int kLanes = 16;
  using V = __m512;
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load(const uint16_t* p) {  // IEEE halves
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static V load(const Bf16* p) {
    const __m512i wide =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static float reduce_add(V v) { return _mm512_reduce_add_ps(v); }
  static float reduce_max(V v) { return _mm512_reduce_max_ps(v); }
  // The 16 reduce_add()s of a 4 x 4 tile of sums at once, each by reduce_add's own tree (lane l +
  // lane l+8, then +4, +2, +1), so every output has its bits: the pairs of one tree level are
  // gathered from several accumulators by shuffles and added in one instruction.
  // output[t * stride + r] = reduce_add(sums[r][t]).
  static void reduce_4x4(const V (&sums)[4][4], float* output, int64_t stride) {
    V level1[8], level2[4], level3[2];
    for (int i = 0; i < 8; ++i) {  // accumulator i = r * 4 + t
      const V a = sums[(2 * i) / 4][(2 * i) % 4], b = sums[(2 * i + 1) / 4][(2 * i + 1) % 4];
      level1[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                                _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    for (int i = 0; i < 4; ++i) {
      const V a = level1[2 * i], b = level1[2 * i + 1];
      level2[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
    }
    for (int i = 0; i < 2; ++i) {
      const V a = level2[2 * i], b = level2[2 * i + 1];
      level3[i] = _mm512_add_ps(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                                _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    // 128-bit chunk t holds rows 0..3 of token t.
    const V all = _mm512_add_ps(_mm512_shuffle_ps(level3[0], level3[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_ps(level3[0], level3[1], _MM_SHUFFLE(3, 1, 3, 1)));
    _mm_storeu_ps(output, _mm512_castps512_ps128(all));
    _mm_storeu_ps(output + stride, _mm512_extractf32x4_ps(all, 1));
    _mm_storeu_ps(output + 2 * stride, _mm512_extractf32x4_ps(all, 2));
    _mm_storeu_ps(output + 3 * stride, _mm512_extractf32x4_ps(all, 3));
  }
  static V exp(V x) {
    x = _mm512_max_ps(x, set1(kExpLow));
    const V n = _mm512_roundscale_ps(_mm512_mul_ps(x, set1(kLog2e)), _MM_FROUND_TO_NEAREST_INT);
    V r = _mm512_fnmadd_ps(n, set1(kLn2High), x);
    r = _mm512_fnmadd_ps(n, set1(kLn2Low), r);
    V y = set1(kExpPoly[0]);
    for (int c = 1; c < 6; ++c) y = _mm512_fmadd_ps(y, r, set1(kExpPoly[c]));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, set1(1.0f)));
    return _mm512_scalef_ps(y, n);
  }
};
}  // namespace avx512
#pragma GCC pop_options
#pragma GCC diagnostic pop

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace avx2 {
struct Vec {
  static constexpr int kLanes = 8;
  using V = __m256;
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load(const uint16_t* p) {  // IEEE halves
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static V load(const Bf16* p) {
    const __m256i wide =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static float reduce_add(V v) {
    __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
    sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
    return _mm_cvtss_f32(sum);
  }
  static float reduce_max(V v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
  static V exp(V x) {
    x = _mm256_max_ps(x, set1(kExpLow));
    const V n = _mm256_round_ps(_mm256_mul_ps(x, set1(kLog2e)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    V r = _mm256_fnmadd_ps(n, set1(kLn2High), x);
    r = _mm256_fnmadd_ps(n, set1(kLn2Low), r);
    V y = set1(kExpPoly[0]);
    for (int c = 1; c < 6; ++c) y = _mm256_fmadd_ps(y, r, set1(kExpPoly[c]));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, set1(1.0f)));
    // 2^n through the exponent field (n >= -126 after the clamp).
    const __m256i bits = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
  }
};
}  // namespace avx2
#pragma GCC pop_options

#endif  // x86-64

namespace scalar {
struct Vec {
  static constexpr int kLanes = 1;
  using V = float;
  static V zero() { return 0.0f; }
  static V set1(float x) { return x; }
  static V load(const float* p) { return *p; }
  static V load(const uint16_t* p) { return quant::fp16_to_fp32(*p); }
  static V load(const Bf16* p) { return quant::bf16_to_fp32(p->bits); }
  static void store(float* p, V v) { *p = v; }
  static V add(V a, V b) { return a + b; }
  static V sub(V a, V b) { return a - b; }
  static V mul(V a, V b) { return a * b; }
  static V fma(V a, V b, V c) { return a * b + c; }
  static V div(V a, V b) { return a / b; }
  static V min(V a, V b) { return std::min(a, b); }
  static V max(V a, V b) { return std::max(a, b); }
  static float reduce_add(V v) { return v; }
  static float reduce_max(V v) { return v; }
  static V exp(V x) { return std::exp(std::max(x, kExpLow)); }
};
}  // namespace scalar

}  // namespace moenav::cpu::simd
