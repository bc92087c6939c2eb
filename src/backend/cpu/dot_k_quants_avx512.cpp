// Q4_K, Q5_K and Q6_K weights x Q8_K activations in 512-bit VNNI steps (Q6_K: dot_q6_k).
//
// The 256-bit body (dot_k_quants_body.inc) spends ~97 instructions on a super-block of one token,
// and Zen4 runs it at the rate it can issue them. Here a Q4_K super-block takes 59:
//   - A 64-element group's 32 bytes of qs are broadcast to both halves of a zmm; the lower half
//     keeps the low nibbles (elements 0..31 of the group), the upper half the high nibbles
//     (32..63), so the vector lines up with 64 consecutive Q8_K quants: one load each.
//   - vpdpbusd sums 4 products of a nibble (up to 31 with Q5_K's fifth bit) and a Q8_K quant
//     (|x| <= 128) per int32 lane: |lane| <= 4 * 31 * 128 < 2^15. Two such vectors pack to s16
//     words without saturation (vpackssdw), and one vpdpwssd multiplies them by their 32-element
//     groups' scales and sums into int32: exact, like the reference.
//   - The scales and mins are unpacked with byte shuffles instead of scalar code.
// Legend: g = 64-element group (levels[g]), k = 32-element group (its scale index),
// h = half of a super-block (groups 2h and 2h+1).
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backend/cpu/matmul_kernels.h"
#include "backend/cpu/prefetch.h"
#include "quant/blocks.h"

namespace moenav::cpu::detail {

#if defined(__x86_64__) && defined(__GNUC__)

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
namespace avx512 {
namespace {

// The 8 scales and 8 mins of a Q4_K / Q5_K super-block as s16 words 0..7 and 8..15 (the same
// values as quant::unpack_scale_min_k4). The 12 packed bytes p[0..11] sit at bytes 4..15 of the
// block: scale j < 4 is p[j] & 63, min j < 4 is p[j + 4] & 63; for j >= 4 the low four bits are
// the low (scale) or high (min) nibble of p[j + 4] and bits 4-5 are the top two bits of p[j - 4]
// (scale) or p[j] (min).
inline __m256i scale_min_words(const void* block) {
  const __m128i raw = _mm_loadu_si128(static_cast<const __m128i*>(block));
  const __m128i low_source = _mm_shuffle_epi8(
      raw, _mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15));
  const __m128i top_source = _mm_shuffle_epi8(
      raw, _mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, 8, 9, 10, 11));
  // Mins 4..7 take the high nibble (bytes 12..15).
  const __m128i nibbles = _mm_mask_mov_epi8(low_source, 0xF000, _mm_srli_epi16(low_source, 4));
  const __m128i low = _mm_and_si128(
      nibbles, _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 15, 15, 15, 15));
  const __m128i top = _mm_and_si128(_mm_srli_epi16(top_source, 2), _mm_set1_epi8(0x30));
  return _mm256_cvtepu8_epi16(_mm_or_si128(low, top));
}

// Word indices into scale_min_words for the packed sums of half h. vpackssdw interleaves its
// inputs per 128-bit chunk: words 0-3 of chunk c come from levels[2h] (chunks 0-1: k = 4h,
// chunks 2-3: k = 4h+1), words 4-7 from levels[2h+1] (k = 4h+2, then 4h+3).
alignas(64) constexpr int16_t kScaleIndex[2][32] = {
    {0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2,
     1, 1, 1, 1, 3, 3, 3, 3, 1, 1, 1, 1, 3, 3, 3, 3},
    {4, 4, 4, 4, 6, 6, 6, 6, 4, 4, 4, 4, 6, 6, 6, 6,
     5, 5, 5, 5, 7, 7, 7, 7, 5, 5, 5, 5, 7, 7, 7, 7}};
// Word indices of the mins paired with Q8_K's 16 bsums (two per 32-element group).
alignas(32) constexpr int16_t kMinPairIndex[16] = {8,  8,  9,  9,  10, 10, 11, 11,
                                                   12, 12, 13, 13, 14, 14, 15, 15};

// Q5_K's fifth bits for levels[g]: byte l of qh holds bit k for element 32 k + l; the lower
// 32 bytes of levels[g] are group k = 2g, the upper 32 bytes k = 2g + 1.
struct FifthBitMasks {
  alignas(64) uint8_t bytes[4][64];
};
constexpr FifthBitMasks fifth_bit_masks() {
  FifthBitMasks masks{};
  for (int g = 0; g < 4; ++g) {
    for (int l = 0; l < 64; ++l) masks.bytes[g][l] = static_cast<uint8_t>(1 << (2 * g + l / 32));
  }
  return masks;
}
constexpr FifthBitMasks kFifthBitMasks = fifth_bit_masks();

// output[t * output_stride] = the sum of the 8 lanes of totals[t]: four 128-bit partial sums
// per token, then two rounds of pairwise adds give all tokens' sums in one vector (missing tokens
// are zeros).
template <int RN>
inline void store_sums(const __m256 (&totals)[RN], float* output, int64_t output_stride) {
  __m128 quarters[4];
  for (int t = 0; t < 4; ++t) {
    quarters[t] =
        t < RN ? _mm_add_ps(_mm256_castps256_ps128(totals[t]), _mm256_extractf128_ps(totals[t], 1))
               : _mm_setzero_ps();
  }
  alignas(16) float sums[4];
  _mm_store_ps(sums, _mm_hadd_ps(_mm_hadd_ps(quarters[0], quarters[1]),
                                 _mm_hadd_ps(quarters[2], quarters[3])));
  for (int t = 0; t < RN; ++t) output[t * output_stride] = sums[t];
}

// Sum over a super-block of level_i x_i times the scale word of element i's group: 16 exact
// int32 lanes. levels[2h], levels[2h + 1]: elements 0..63 and 64..127 of half h (unsigned);
// scales[h]: the s16 scale words of half h in the order vpackssdw leaves the sums in.
inline __m512i scaled_dot(const __m512i (&levels)[4], const __m512i (&scales)[2], const int8_t* x) {
  __m512i isum = _mm512_setzero_si512();
  for (int h = 0; h < 2; ++h) {
    const __m512i first =
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), levels[2 * h], _mm512_loadu_si512(x + 128 * h));
    const __m512i second = _mm512_dpbusd_epi32(_mm512_setzero_si512(), levels[2 * h + 1],
                                               _mm512_loadu_si512(x + 128 * h + 64));
    isum = _mm512_dpwssd_epi32(isum, _mm512_packs_epi32(first, second), scales[h]);
  }
  return isum;
}

// The streamed kernels' prefetch (prefetch.h): 4 KiB ahead, and for Q5_K and Q6_K one line more
// than their super-blocks span. Against the default (8 KiB, the span), in-process A/B on the
// 2-core Xeon: Q4_K +1 %, Q5_K +10-13 %, Q6_K +5 % (the extra line alone: Q4_K -2 %, Q5_K +4 %).
template <typename Block>
inline void prefetch_k_quant(const Block* block) {
  constexpr int kSpan = (sizeof(Block) + 63) / 64;
  constexpr int kLines = std::is_same_v<Block, quant::BlockQ4_K> ? kSpan : kSpan + 1;
  prefetch_weights_ahead<sizeof(Block), 4 * 1024, kLines>(block);
}

template <typename Block, int RN, bool kStream>
void dot_q45_k(const uint8_t* weight_row, const uint8_t* activations, int64_t activation_row_bytes,
               int64_t nb, float* output, int64_t output_stride) {
  constexpr bool kFifthBit = std::is_same_v<Block, quant::BlockQ5_K>;
  const auto* w = reinterpret_cast<const Block*>(weight_row);
  const quant::BlockQ8_K* a[RN];
  for (int t = 0; t < RN; ++t) {
    a[t] = reinterpret_cast<const quant::BlockQ8_K*>(activations + t * activation_row_bytes);
  }
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  const __m512i scale_indices[2] = {_mm512_load_si512(kScaleIndex[0]),
                                    _mm512_load_si512(kScaleIndex[1])};
  const __m256i min_indices = _mm256_load_si256(reinterpret_cast<const __m256i*>(kMinPairIndex));
  // Per token: sum over super-blocks of d_x d isum (16 lanes) and of d_x dmin msum (8 lanes).
  __m512 scaled[RN];
  __m256 mins[RN];
  for (int t = 0; t < RN; ++t) {
    scaled[t] = _mm512_setzero_ps();
    mins[t] = _mm256_setzero_ps();
  }
  // A row has at least one super-block; the do-while keeps the accumulators in registers (GCC
  // spills them to the stack to merge the empty-loop path otherwise).
  int64_t b = 0;
  do {
    if constexpr (kStream) prefetch_k_quant<Block>(&w[b]);
    const __m256i words = scale_min_words(&w[b]);
    const __m512i scales[2] = {
        _mm512_permutexvar_epi16(scale_indices[0], _mm512_castsi256_si512(words)),
        _mm512_permutexvar_epi16(scale_indices[1], _mm512_castsi256_si512(words))};
    const __m256i min_pairs = _mm256_permutexvar_epi16(min_indices, words);
    __m512i levels[4];  // 64-element groups: low nibbles, then high nibbles of 32 bytes of qs
    for (int g = 0; g < 4; ++g) {
      const __m512i packed = _mm512_broadcast_i64x4(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs + 32 * g)));
      levels[g] = _mm512_and_si512(_mm512_mask_srli_epi16(packed, 0xFFFF0000, packed, 4), nibble);
    }
    if constexpr (kFifthBit) {
      const __m512i high_bits =
          _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qh)));
      for (int g = 0; g < 4; ++g) {
        const __mmask64 set =
            _mm512_test_epi8_mask(high_bits, _mm512_load_si512(kFifthBitMasks.bytes[g]));
        levels[g] = _mm512_mask_add_epi8(levels[g], set, levels[g], _mm512_set1_epi8(16));
      }
    }
    int32_t d_dmin_halves;  // d and dmin, adjacent IEEE halves
    std::memcpy(&d_dmin_halves, &w[b].d, sizeof(d_dmin_halves));
    const __m128 d_dmin = _mm_cvtph_ps(_mm_cvtsi32_si128(d_dmin_halves));
    for (int t = 0; t < RN; ++t) {
      const __m512i isum = scaled_dot(levels, scales, a[t][b].qs);
      const __m256i msum = _mm256_madd_epi16(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t][b].bsums)), min_pairs);
      const __m128 factors = _mm_mul_ps(d_dmin, _mm_set1_ps(a[t][b].d));  // d_x d, d_x dmin
      scaled[t] =
          _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_broadcastss_ps(factors), scaled[t]);
      mins[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(msum),
                                _mm256_broadcastss_ps(_mm_movehdup_ps(factors)), mins[t]);
    }
  } while (++b < nb);
  __m256 totals[RN];
  for (int t = 0; t < RN; ++t) {
    totals[t] = _mm256_sub_ps(
        _mm256_add_ps(_mm512_castps512_ps256(scaled[t]), _mm512_extractf32x8_ps(scaled[t], 1)),
        mins[t]);
  }
  store_sums<RN>(totals, output, output_stride);
}

// Word indices into Q6_K's 16 scales (s16) for the packed sums of half h: words 0-3 of chunk c
// come from the group of elements 0..63 of the half (sub-block 8h + c), words 4-7 from 64..127
// (sub-block 8h + 4 + c).
struct Q6ScaleIndex {
  alignas(64) int16_t words[2][32];
};
constexpr Q6ScaleIndex q6_scale_index() {
  Q6ScaleIndex index{};
  for (int h = 0; h < 2; ++h) {
    for (int i = 0; i < 32; ++i) {
      index.words[h][i] = static_cast<int16_t>(8 * h + i / 8 + (i % 8 >= 4 ? 4 : 0));
    }
  }
  return index;
}
constexpr Q6ScaleIndex kQ6ScaleIndex = q6_scale_index();

// Q6_K: half h's 64 bytes of ql hold elements 0..63 of the half in their low nibbles and
// 64..127 in their high ones, in order; its 32 bytes of qh, broadcast to both halves of a zmm
// and shifted right by 2 in the upper one, hold the top two bits of element l and l + 32 at bits
// 0-1 and of elements l + 64 and l + 96 at bits 4-5. The levels (0..63, the value + 32) times
// Q8_K quants sum to |lane| <= 4 * 63 * 128 < 2^15, so vpackssdw and vpdpwssd by the sub-blocks'
// int8 scales are exact, as with Q4_K; 32 * sum_j scale_j bsum_j takes the +32 back out.
template <int RN, bool kStream>
void dot_q6_k(const uint8_t* weight_row, const uint8_t* activations, int64_t activation_row_bytes,
              int64_t nb, float* output, int64_t output_stride) {
  const auto* w = reinterpret_cast<const quant::BlockQ6_K*>(weight_row);
  const quant::BlockQ8_K* a[RN];
  for (int t = 0; t < RN; ++t) {
    a[t] = reinterpret_cast<const quant::BlockQ8_K*>(activations + t * activation_row_bytes);
  }
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  const __m512i top_bits = _mm512_set1_epi8(0x30);
  const __m512i scale_indices[2] = {_mm512_load_si512(kQ6ScaleIndex.words[0]),
                                    _mm512_load_si512(kQ6ScaleIndex.words[1])};
  __m512 scaled[RN];
  for (int t = 0; t < RN; ++t) scaled[t] = _mm512_setzero_ps();
  int64_t b = 0;
  do {  // a row has at least one super-block (see dot_q45_k)
    if constexpr (kStream) prefetch_k_quant<quant::BlockQ6_K>(&w[b]);
    const __m256i scale_words =
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].scales)));
    __m512i levels[4], scales[2];  // levels[2h]: elements 0..63 of half h, levels[2h + 1]: 64..127
    for (int h = 0; h < 2; ++h) {
      const __m512i low = _mm512_loadu_si512(w[b].ql + 64 * h);
      const __m512i high = _mm512_broadcast_i64x4(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qh + 32 * h)));
      const __m512i top = _mm512_mask_srli_epi16(high, 0xFFFF0000, high, 2);
      levels[2 * h] = _mm512_or_si512(_mm512_and_si512(low, nibble),
                                      _mm512_and_si512(_mm512_slli_epi16(top, 4), top_bits));
      levels[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(low, 4), nibble),
                                          _mm512_and_si512(top, top_bits));
      scales[h] = _mm512_permutexvar_epi16(scale_indices[h], _mm512_castsi256_si512(scale_words));
    }
    const float d = _cvtsh_ss(w[b].d);
    for (int t = 0; t < RN; ++t) {
      __m512i isum = scaled_dot(levels, scales, a[t][b].qs);
      const __m256i offset = _mm256_madd_epi16(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t][b].bsums)), scale_words);
      isum = _mm512_sub_epi32(isum, _mm512_zextsi256_si512(_mm256_slli_epi32(offset, 5)));
      scaled[t] =
          _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(d * a[t][b].d), scaled[t]);
    }
  } while (++b < nb);
  __m256 totals[RN];
  for (int t = 0; t < RN; ++t) {
    totals[t] =
        _mm256_add_ps(_mm512_castps512_ps256(scaled[t]), _mm512_extractf32x8_ps(scaled[t], 1));
  }
  store_sums<RN>(totals, output, output_stride);
}

// DotFn; kStream: a one-token read prefetches the weights ahead (prefetch.h), for weights too
// large to stay in cache.
template <typename Block, bool kStream = false>
void dot_tokens(const uint8_t* weight_row, const uint8_t* activations, int64_t activation_row_bytes,
                int n_tokens, int64_t nb, float* output, int64_t output_stride) {
  auto run = [&]<int RN, bool kPrefetch = false>() {
    if constexpr (std::is_same_v<Block, quant::BlockQ6_K>) {
      dot_q6_k<RN, kPrefetch>(weight_row, activations, activation_row_bytes, nb, output,
                              output_stride);
    } else {
      dot_q45_k<Block, RN, kPrefetch>(weight_row, activations, activation_row_bytes, nb, output,
                                      output_stride);
    }
  };
  switch (n_tokens) {
    case 1:
      return run.template operator()<1, kStream>();
    case 2:
      return run.template operator()<2>();
    case 3:
      return run.template operator()<3>();
    default:
      return run.template operator()<4>();
  }
}

}  // namespace
}  // namespace avx512
#pragma GCC pop_options
#pragma GCC diagnostic pop

#endif

DotFn dot_k_quant_avx512_family(DType weight_type, WeightRead read) {
#if defined(__x86_64__) && defined(__GNUC__)
  const bool stream = read == WeightRead::Streamed;
  auto pick = [stream]<typename Block>() -> DotFn {
    return stream ? &avx512::dot_tokens<Block, true> : &avx512::dot_tokens<Block>;
  };
  if (weight_type == DType::Q4_K) return pick.template operator()<quant::BlockQ4_K>();
  if (weight_type == DType::Q5_K) return pick.template operator()<quant::BlockQ5_K>();
  if (weight_type == DType::Q6_K) return pick.template operator()<quant::BlockQ6_K>();
#else
  (void)weight_type;
  (void)read;
#endif
  return nullptr;
}

}  // namespace moenav::cpu::detail
