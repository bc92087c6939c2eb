// Float-weight matrix products (F32, F16, BF16 weights, f32 activations, f32 accumulation), and
// the dequantize-then-multiply fallback for block formats without an integer kernel.
// The kernel body is matmul_float_tile.inc, compiled here once per instruction set.
#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backend/cpu/matmul_kernels.h"
#include "core/check.h"
#include "quant/quant.h"

namespace moenav::cpu::detail {

#if defined(__x86_64__) && defined(__GNUC__)

// GCC 12's AVX-512 headers self-initialize their "undefined" vectors, which -Wuninitialized
// reports at every use (GCC bug 105593, fixed in 12.3): silenced for the AVX-512 region only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")
namespace avx512 {
struct Vec {
  static constexpr int kLanes = 16;
  using V = __m512;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load(const Bf16* p) {
    const __m512i wide =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
  static V load(const F16* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static float reduce(V v) {
    const __m256 high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    const __m256 half = _mm256_add_ps(_mm512_castps512_ps256(v), high);
    __m128 sum = _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
    sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
    sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
    return _mm_cvtss_f32(sum);
  }
  static float to_float(float w) { return w; }
  static float to_float(Bf16 w) { return quant::bf16_to_fp32(w.bits); }
  static float to_float(F16 w) { return quant::fp16_to_fp32(w.bits); }
  // The 16 sums of a 4 x 4 tile at once, each by reduce()'s own tree (lane l + lane l+8, then +4,
  // +2, +1), so every output has reduce()'s bits: the pairs of one tree level are gathered from
  // several accumulators by shuffles and added in one instruction. output[t * stride + r].
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
};
#include "backend/cpu/matmul_float_tile.inc"
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
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load(const Bf16* p) {
    const __m256i wide =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static V load(const F16* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static float reduce(V v) {
    __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
    sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
    return _mm_cvtss_f32(sum);
  }
  static float to_float(float w) { return w; }
  static float to_float(Bf16 w) { return quant::bf16_to_fp32(w.bits); }
  static float to_float(F16 w) { return quant::fp16_to_fp32(w.bits); }
};
#include "backend/cpu/matmul_float_tile.inc"
}  // namespace avx2
#pragma GCC pop_options

#endif  // x86-64

namespace scalar {
struct Vec {
  static constexpr int kLanes = 1;
  using V = float;
  static V zero() { return 0.0f; }
  static V load(const float* p) { return *p; }
  static V load(const Bf16* p) { return quant::bf16_to_fp32(p->bits); }
  static V load(const F16* p) { return quant::fp16_to_fp32(p->bits); }
  static void store(float* p, V v) { *p = v; }
  static V fma(V a, V b, V c) { return a * b + c; }
  static float reduce(V v) { return v; }
  static float to_float(float w) { return w; }
  static float to_float(Bf16 w) { return quant::bf16_to_fp32(w.bits); }
  static float to_float(F16 w) { return quant::fp16_to_fp32(w.bits); }
};
#include "backend/cpu/matmul_float_tile.inc"
}  // namespace scalar

void matmul_float_rows(Isa isa, DType dtype, const uint8_t* weight, int64_t row_bytes,
                       int64_t k_count, const float* input, int64_t n_tokens, float* output,
                       int64_t output_stride, int64_t row_begin, int64_t row_end) {
  switch (isa) {
#if defined(__x86_64__) && defined(__GNUC__)
    case Isa::Avx512:
      return avx512::matmul_float_rows_impl(dtype, weight, row_bytes, k_count, input, n_tokens,
                                            output, output_stride, row_begin, row_end);
    case Isa::Avx2:
      return avx2::matmul_float_rows_impl(dtype, weight, row_bytes, k_count, input, n_tokens,
                                          output, output_stride, row_begin, row_end);
#endif
    default:
      return scalar::matmul_float_rows_impl(dtype, weight, row_bytes, k_count, input, n_tokens,
                                            output, output_stride, row_begin, row_end);
  }
}

}  // namespace moenav::cpu::detail
