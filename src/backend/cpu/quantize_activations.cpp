// Activation quantization for the integer kernels (f32 rows to Q8_0 or Q8_K blocks), vectorized
// and bit-identical to the reference quantizers in src/quant (tested), so every instruction set
// feeds the dot kernels the same bytes. Runs once per matmul call; at decode with small K it is a
// visible share of a matvec, hence SIMD.
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backend/cpu/matmul_kernels.h"
#include "core/check.h"
#include "quant/blocks.h"
#include "quant/quant.h"

namespace moenav::cpu::detail {
namespace {

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace avx2 {

inline float max_abs(const float* x, int n) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8)
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

// 32 int32 (four vectors) to 32 int8 in order.
inline void store_int8(__m256i a, __m256i b, __m256i c, __m256i d, int8_t* out) {
  const __m256i ab = _mm256_packs_epi32(a, b);  // lanes interleave by 128-bit halves
  const __m256i cd = _mm256_packs_epi32(c, d);
  const __m256i packed = _mm256_packs_epi16(ab, cd);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_permutevar8x32_epi32(packed, order));
}

// roundf (ties away from zero), exactly: t - trunc(t) is exact in float.
inline __m256i round_away(__m256 t) {
  const __m256 truncated = _mm256_round_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 fraction = _mm256_sub_ps(t, truncated);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 up =
      _mm256_cmp_ps(_mm256_andnot_ps(sign, fraction), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
  const __m256 step = _mm256_and_ps(up, _mm256_or_ps(_mm256_and_ps(t, sign), _mm256_set1_ps(1.0f)));
  return _mm256_cvttps_epi32(_mm256_add_ps(truncated, step));
}

void quantize_q8_0(const float* x, uint8_t* out, int64_t n) {
  auto* blocks = reinterpret_cast<quant::BlockQ8_0*>(out);
  for (int64_t b = 0; b < n / 32; ++b, x += 32) {
    const float scale = max_abs(x, 32) / 127.0f;
    const float inverse = scale != 0.0f ? 1.0f / scale : 0.0f;
    blocks[b].d = quant::fp32_to_fp16(scale);
    const __m256 id = _mm256_set1_ps(inverse);
    __m256i q[4];
    for (int j = 0; j < 4; ++j) q[j] = round_away(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * j), id));
    store_int8(q[0], q[1], q[2], q[3], blocks[b].qs);
  }
}

void quantize_q8_k(const float* x, uint8_t* out, int64_t n) {
  auto* blocks = reinterpret_cast<quant::BlockQ8_K*>(out);
  for (int64_t b = 0; b < n / quant::kSuperBlock; ++b, x += quant::kSuperBlock) {
    quant::BlockQ8_K& block = blocks[b];
    const float amax = max_abs(x, quant::kSuperBlock);
    if (amax == 0.0f) {
      std::memset(&block, 0, sizeof(block));
      continue;
    }
    int first = 0;  // the reference keeps the first element of largest magnitude (its sign matters)
    while (std::fabs(x[first]) != amax) ++first;
    const float inverse_scale = -127.f / x[first];
    const __m256 is = _mm256_set1_ps(inverse_scale);
    const __m256i limit = _mm256_set1_epi32(127);
    for (int j = 0; j < quant::kSuperBlock; j += 32) {
      __m256i q[4];
      for (int k = 0; k < 4; ++k) {  // cvtps rounds to nearest even, as nearest_int
        q[k] = _mm256_min_epi32(
            limit, _mm256_cvtps_epi32(_mm256_mul_ps(is, _mm256_loadu_ps(x + j + 8 * k))));
      }
      store_int8(q[0], q[1], q[2], q[3], block.qs + j);
    }
    for (int j = 0; j < quant::kSuperBlock / 16; ++j) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) sum += block.qs[16 * j + i];
      block.bsums[j] = static_cast<int16_t>(sum);
    }
    block.d = 1 / inverse_scale;
  }
}

// Q8_0Quad rows: per block, its halves copied to the quad's low and high vectors and the lane
// sums (lane j: quants 4j..4j+3 and 16+4j..16+4j+3) negated; maddubs adds byte pairs (ones are
// unsigned, quants signed, no saturation at 2 * 128), madd the 16-bit pairs.
void quads(const uint8_t* q8_0_row, int64_t n_blocks, Q8_0Quad* out) {
  const auto* blocks = reinterpret_cast<const quant::BlockQ8_0*>(q8_0_row);
  const __m256i ones8 = _mm256_set1_epi8(1);
  const __m256i ones16 = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < quads_per_row(n_blocks) * kQuadBlocks; ++b) {
    Q8_0Quad& quad = out[b / kQuadBlocks];
    const int k = static_cast<int>(b % kQuadBlocks);
    __m256i q = _mm256_setzero_si256();
    float scale = 0.0f;
    if (b < n_blocks) {
      q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blocks[b].qs));
      scale = _cvtsh_ss(blocks[b].d);
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(quad.low + 16 * k), _mm256_castsi256_si128(q));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(quad.high + 16 * k),
                     _mm256_extracti128_si256(q, 1));
    const __m256i fours = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, q), ones16);
    const __m128i eights =
        _mm_add_epi32(_mm256_castsi256_si128(fours), _mm256_extracti128_si256(fours, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(quad.sums + 4 * k),
                     _mm_sub_epi32(_mm_setzero_si128(), eights));
    _mm_storeu_ps(quad.scales + 4 * k, _mm_set1_ps(scale));
  }
}

}  // namespace avx2
#pragma GCC pop_options
#endif

}  // namespace

void quantize_activation_row(Isa isa, DType format, const float* input, uint8_t* output,
                             int64_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (isa != Isa::Scalar) {
    if (format == DType::Q8_0) return avx2::quantize_q8_0(input, output, n);
    if (format == DType::Q8_K) return avx2::quantize_q8_k(input, output, n);
  }
#endif
  quant::quantize_row(format, input, output, n);
}

void activation_quads(Isa isa, const uint8_t* q8_0_row, int64_t n_blocks, Q8_0Quad* quads) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (isa != Isa::Scalar) return avx2::quads(q8_0_row, n_blocks, quads);
#endif
  const auto* blocks = reinterpret_cast<const quant::BlockQ8_0*>(q8_0_row);
  for (int64_t q = 0; q < quads_per_row(n_blocks); ++q) quads[q] = Q8_0Quad{};
  for (int64_t b = 0; b < n_blocks; ++b) {
    Q8_0Quad& quad = quads[b / kQuadBlocks];
    const int k = static_cast<int>(b % kQuadBlocks);
    for (int i = 0; i < 16; ++i) {
      quad.low[16 * k + i] = blocks[b].qs[i];
      quad.high[16 * k + i] = blocks[b].qs[16 + i];
    }
    for (int lane = 0; lane < 4; ++lane) {
      int sum = 0;
      for (int i = 4 * lane; i < 4 * lane + 4; ++i) sum += blocks[b].qs[i] + blocks[b].qs[16 + i];
      quad.sums[4 * k + lane] = -sum;
      quad.scales[4 * k + lane] = quant::fp16_to_fp32(blocks[b].d);
    }
  }
}

}  // namespace moenav::cpu::detail
