// Integer dot products of Q8_0 and Q4_0 weights with Q8_0 activations (ggml's
// vec_dot_q8_0_q8_0 / q4_0_q8_0): an AVX-512 VNNI and an AVX2 variant (dot_q8_0_body.inc) and the
// scalar reference they are tested against.
//
// Why intrinsics and not Highway: these kernels are built from x86 integer idioms with no
// portable equivalent in Highway's op set at the same cost (maddubs' pairwise u8 x s8 sums,
// sign_epi8 to move signs between operands, vpdpbusd), and ggml's formats are designed around
// them. A portable layer would hide exactly the instructions the speed comes from.
#include <algorithm>
#include <cstdint>
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

namespace scalar {

template <typename Block>
int weight_level(const Block& block, int i) {
  if constexpr (std::is_same_v<Block, quant::BlockQ4_0>) {
    const int packed = block.qs[i % 16];
    return (i < 16 ? packed & 0xF : packed >> 4) - 8;
  } else {
    return block.qs[i];
  }
}

// The reference: exact int32 block sums, float accumulation in block order.
template <typename Block>
void dot_q8_0_tokens(const uint8_t* weight_row, const uint8_t* activations,
                     int64_t activation_row_bytes, int n_tokens, int64_t nb, float* output,
                     int64_t output_stride) {
  const auto* w = reinterpret_cast<const Block*>(weight_row);
  for (int t = 0; t < n_tokens; ++t) {
    const auto* a =
        reinterpret_cast<const quant::BlockQ8_0*>(activations + t * activation_row_bytes);
    float sum = 0.0f;
    for (int64_t b = 0; b < nb; ++b) {
      int32_t block_sum = 0;
      for (int i = 0; i < quant::kBlockQ8_0; ++i) block_sum += weight_level(w[b], i) * a[b].qs[i];
      sum += static_cast<float>(block_sum) *
             (quant::fp16_to_fp32(w[b].d) * quant::fp16_to_fp32(a[b].d));
    }
    output[t * output_stride] = sum;
  }
}

}  // namespace scalar

#if defined(__x86_64__) && defined(__GNUC__)

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace avx2 {
constexpr int kTileRows = 2;
#define MOENAV_DOT_Q8_0_QUADS 0
#include "backend/cpu/dot_q8_0_body.inc"
#undef MOENAV_DOT_Q8_0_QUADS
}  // namespace avx2
#pragma GCC pop_options

// GCC 12's AVX-512 headers trip -Wuninitialized on their own "undefined" vectors (GCC bug
// 105593): silenced for the AVX-512 region only, as in simd_vec.h.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
namespace avx512 {
constexpr int kTileRows = 4;
#define MOENAV_DOT_Q8_0_QUADS 1  // four blocks per step on PreparedInput::quads
#include "backend/cpu/dot_q8_0_body.inc"
#undef MOENAV_DOT_Q8_0_QUADS
}  // namespace avx512
#pragma GCC pop_options
#pragma GCC diagnostic pop

#endif

}  // namespace

DotFn dot_q8_0_family(Isa isa, DType weight_type, WeightRead read) {
  const bool q4 = weight_type == DType::Q4_0;
  if (!q4 && weight_type != DType::Q8_0) return nullptr;
  const bool stream = read == WeightRead::Streamed;
  switch (isa) {
#if defined(__x86_64__) && defined(__GNUC__)
    case Isa::Avx512:
      if (stream) {
        return q4 ? &avx512::dot_q8_0_streamed<quant::BlockQ4_0>
                  : &avx512::dot_q8_0_streamed<quant::BlockQ8_0>;
      }
      return q4 ? &avx512::dot_q8_0_tokens<quant::BlockQ4_0>
                : &avx512::dot_q8_0_tokens<quant::BlockQ8_0>;
    case Isa::Avx2:
      if (stream) {
        return q4 ? &avx2::dot_q8_0_streamed<quant::BlockQ4_0>
                  : &avx2::dot_q8_0_streamed<quant::BlockQ8_0>;
      }
      return q4 ? &avx2::dot_q8_0_tokens<quant::BlockQ4_0>
                : &avx2::dot_q8_0_tokens<quant::BlockQ8_0>;
#endif
    default:
      return q4 ? &scalar::dot_q8_0_tokens<quant::BlockQ4_0>
                : &scalar::dot_q8_0_tokens<quant::BlockQ8_0>;
  }
}

bool reads_activation_quads(Isa isa, DType weight_type) {
  return isa == Isa::Avx512 && (weight_type == DType::Q4_0 || weight_type == DType::Q8_0);
}

DotRowsFn dot_q8_0_rows_family(Isa isa, DType weight_type) {
  const bool q4 = weight_type == DType::Q4_0;
  if (!q4 && weight_type != DType::Q8_0) return nullptr;
  switch (isa) {
#if defined(__x86_64__) && defined(__GNUC__)
    case Isa::Avx512:
      return q4 ? &avx512::dot_q8_0_row_tile<quant::BlockQ4_0>
                : &avx512::dot_q8_0_row_tile<quant::BlockQ8_0>;
    case Isa::Avx2:
      return q4 ? &avx2::dot_q8_0_row_tile<quant::BlockQ4_0>
                : &avx2::dot_q8_0_row_tile<quant::BlockQ8_0>;
#endif
    default:
      return nullptr;  // the scalar reference stays one row at a time
  }
}

}  // namespace moenav::cpu::detail
