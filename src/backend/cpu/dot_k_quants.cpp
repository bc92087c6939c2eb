// Integer dot products of the k-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) with Q8_K activations:
// AVX-512 and AVX2 builds of one 256-bit body (dot_k_quants_body.inc) and the scalar reference. On
// Zen4 a 512-bit integer op costs two 256-bit ones, so the AVX-512 build gains only EVEX
// encodings, 32 registers and VNNI's vpdpwssd here; see dot_q8_0.cpp for why these are
// intrinsics rather than Highway.
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backend/cpu/matmul_kernels.h"
#include "backend/cpu/prefetch.h"
#include "quant/blocks.h"
#include "quant/quant.h"

namespace moenav::cpu::detail {
namespace {

// The 8 6-bit scales and mins of a Q4_K / Q5_K super-block, four at a time from 32-bit words
// (same result as quant::unpack_scale_min_k4 for j = 0..7).
inline void unpack_k4_scales(const uint8_t* packed, uint8_t* scales, uint8_t* mins) {
  uint32_t a, b, c;
  std::memcpy(&a, packed, 4);
  std::memcpy(&b, packed + 4, 4);
  std::memcpy(&c, packed + 8, 4);
  const uint32_t low_scales = a & 0x3F3F3F3F;
  const uint32_t low_mins = b & 0x3F3F3F3F;
  const uint32_t high_scales = (c & 0x0F0F0F0F) | (((a >> 6) & 0x03030303) << 4);
  const uint32_t high_mins = ((c >> 4) & 0x0F0F0F0F) | (((b >> 6) & 0x03030303) << 4);
  std::memcpy(scales, &low_scales, 4);
  std::memcpy(scales + 4, &high_scales, 4);
  std::memcpy(mins, &low_mins, 4);
  std::memcpy(mins + 4, &high_mins, 4);
}

// Q3_K's 16 signed 6-bit scales (stored + 32 in 12 bytes), four at a time: low nibbles from
// bytes 0-7, top two bits from bytes 8-11 (same result as the per-element rule in
// quant_q2_k_q3_k.cpp).
inline void unpack_q3_scales(const uint8_t* packed, int8_t* scales) {
  uint32_t low0, low1, top;
  std::memcpy(&low0, packed, 4);
  std::memcpy(&low1, packed + 4, 4);
  std::memcpy(&top, packed + 8, 4);
  const uint32_t words[4] = {(low0 & 0x0F0F0F0F) | (((top >> 0) & 0x03030303) << 4),
                             (low1 & 0x0F0F0F0F) | (((top >> 2) & 0x03030303) << 4),
                             ((low0 >> 4) & 0x0F0F0F0F) | (((top >> 4) & 0x03030303) << 4),
                             ((low1 >> 4) & 0x0F0F0F0F) | (((top >> 6) & 0x03030303) << 4)};
  uint8_t biased[16];
  std::memcpy(biased, words, 16);
  for (int j = 0; j < 16; ++j) scales[j] = static_cast<int8_t>(biased[j] - 32);
}

namespace scalar {

int two_bit_level(const uint8_t* qs, int i) {
  return (qs[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
}

// Level (unsigned, as stored) of element i of a super-block.
int level(const quant::BlockQ4_K& block, int i) {
  const int packed = block.qs[32 * (i / 64) + i % 32];
  return (i % 64) < 32 ? packed & 0xF : packed >> 4;
}
int level(const quant::BlockQ5_K& block, int i) {
  const int packed = block.qs[32 * (i / 64) + i % 32];
  const int low = (i % 64) < 32 ? packed & 0xF : packed >> 4;
  const int shift = 2 * (i / 64) + ((i % 64) < 32 ? 0 : 1);
  return low | (((block.qh[i % 32] >> shift) & 1) << 4);
}
int level(const quant::BlockQ6_K& block, int i) {
  const int h = i / 128, k = (i % 128) / 32, l = i % 32;
  const int packed = block.ql[64 * h + 32 * (k % 2) + l];
  const int low = k < 2 ? packed & 0xF : packed >> 4;
  return low | (((block.qh[32 * h + l] >> (2 * k)) & 3) << 4);
}

// Signed value of element i of a Q3_K super-block: level - 4 unless its high bit is set.
int q3_value(const quant::BlockQ3_K& block, int i) {
  const int high = (block.hmask[i % 32] >> (i / 32)) & 1;
  return two_bit_level(block.qs, i) - (high ? 0 : 4);
}

// The reference: exact int32 sums per super-block, then
// sum += (d_x * d) * sum(sc q x) - (d_x * dmin) * sum(m * bsum)  (Q4_K, Q5_K)
// sum += (d_x * d) * sum(sc (q - 32) x)                          (Q6_K; Q3_K with its values)
template <typename Block>
void dot_k_tokens(const uint8_t* weight_row, const uint8_t* activations,
                  int64_t activation_row_bytes, int n_tokens, int64_t nb, float* output,
                  int64_t output_stride) {
  const auto* w = reinterpret_cast<const Block*>(weight_row);
  for (int t = 0; t < n_tokens; ++t) {
    const auto* a =
        reinterpret_cast<const quant::BlockQ8_K*>(activations + t * activation_row_bytes);
    float sum = 0.0f;
    for (int64_t b = 0; b < nb; ++b) {
      int32_t level_sum = 0;
      if constexpr (std::is_same_v<Block, quant::BlockQ6_K>) {
        for (int i = 0; i < quant::kSuperBlock; ++i) {
          level_sum += w[b].scales[i / 16] * (level(w[b], i) - 32) * a[b].qs[i];
        }
        sum += (a[b].d * quant::fp16_to_fp32(w[b].d)) * static_cast<float>(level_sum);
      } else if constexpr (std::is_same_v<Block, quant::BlockQ3_K>) {
        int8_t scales[16];
        unpack_q3_scales(w[b].scales, scales);
        for (int i = 0; i < quant::kSuperBlock; ++i)
          level_sum += scales[i / 16] * q3_value(w[b], i) * a[b].qs[i];
        sum += (a[b].d * quant::fp16_to_fp32(w[b].d)) * static_cast<float>(level_sum);
      } else if constexpr (std::is_same_v<Block, quant::BlockQ2_K>) {
        int32_t min_sum = 0;
        for (int i = 0; i < quant::kSuperBlock; ++i) {
          level_sum += (w[b].scales[i / 16] & 0xF) * two_bit_level(w[b].qs, i) * a[b].qs[i];
        }
        for (int j = 0; j < 16; ++j) min_sum += (w[b].scales[j] >> 4) * a[b].bsums[j];
        sum += (a[b].d * quant::fp16_to_fp32(w[b].d)) * static_cast<float>(level_sum) -
               (a[b].d * quant::fp16_to_fp32(w[b].dmin)) * static_cast<float>(min_sum);
      } else {
        uint8_t scales[8], mins[8];
        unpack_k4_scales(w[b].scales, scales, mins);
        int32_t min_sum = 0;
        for (int i = 0; i < quant::kSuperBlock; ++i)
          level_sum += scales[i / 32] * level(w[b], i) * a[b].qs[i];
        for (int j = 0; j < 16; ++j) min_sum += mins[j / 2] * a[b].bsums[j];
        sum += (a[b].d * quant::fp16_to_fp32(w[b].d)) * static_cast<float>(level_sum) -
               (a[b].d * quant::fp16_to_fp32(w[b].dmin)) * static_cast<float>(min_sum);
      }
    }
    output[t * output_stride] = sum;
  }
}

}  // namespace scalar

#if defined(__x86_64__) && defined(__GNUC__)

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace avx2 {
// acc + madd(pairs, scale): s16 pairs times s16 scales, summed in adjacent pairs into int32.
inline __m256i add_scaled_pairs(__m256i acc, __m256i pairs, __m256i scale) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, scale));
}
// (low & mask) | high, high having no bit of mask set.
inline __m256i merge_two_bits(__m256i low, __m256i high, __m256i mask) {
  return _mm256_or_si256(_mm256_and_si256(low, mask), high);
}
#include "backend/cpu/dot_k_quants_body.inc"
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
namespace avx512 {
// The same in one VNNI instruction (vpdpwssd: exact, no saturation).
inline __m256i add_scaled_pairs(__m256i acc, __m256i pairs, __m256i scale) {
  return _mm256_dpwssd_epi32(acc, pairs, scale);
}
// (low & mask) | high in one ternary-logic instruction (0xEC: (A & C) | B with A = low,
// B = high, C = mask).
inline __m256i merge_two_bits(__m256i low, __m256i high, __m256i mask) {
  return _mm256_ternarylogic_epi32(low, high, mask, 0xEC);
}
#include "backend/cpu/dot_k_quants_body.inc"
}  // namespace avx512
#pragma GCC pop_options

#endif

template <typename Block>
DotFn for_isa(Isa isa, WeightRead read) {
  const bool stream = read == WeightRead::Streamed;
  switch (isa) {
#if defined(__x86_64__) && defined(__GNUC__)
    case Isa::Avx512:
      return stream ? &avx512::dot_k_tokens<Block, true> : &avx512::dot_k_tokens<Block>;
    case Isa::Avx2:
      return stream ? &avx2::dot_k_tokens<Block, true> : &avx2::dot_k_tokens<Block>;
#endif
    default:
      return &scalar::dot_k_tokens<Block>;
  }
}

}  // namespace

DotFn dot_k_quant_family(Isa isa, DType weight_type, WeightRead read) {
  if (isa == Isa::Avx512) {
    if (DotFn dot = dot_k_quant_avx512_family(weight_type, read)) return dot;
  }
  switch (weight_type) {
    case DType::Q4_K:
      return for_isa<quant::BlockQ4_K>(isa, read);
    case DType::Q5_K:
      return for_isa<quant::BlockQ5_K>(isa, read);
    case DType::Q6_K:
      return for_isa<quant::BlockQ6_K>(isa, read);
    case DType::Q2_K:
      return for_isa<quant::BlockQ2_K>(isa, read);
    case DType::Q3_K:
      return for_isa<quant::BlockQ3_K>(isa, read);
    default:
      return nullptr;
  }
}

}  // namespace moenav::cpu::detail
