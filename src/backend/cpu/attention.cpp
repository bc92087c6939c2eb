// attention_head: the blocked kernel (attention_body.inc) compiled for AVX-512, AVX2 and scalar,
// and the plain reference the tests hold it to.
#include "backend/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backend/cpu/simd_vec.h"
#include "core/check.h"

namespace moenav::cpu {
namespace {

#if defined(__x86_64__) && defined(__GNUC__)
namespace avx512 {
using Vec = simd::avx512::Vec;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma")
#include "backend/cpu/attention_body.inc"
#pragma GCC pop_options
#pragma GCC diagnostic pop
}  // namespace avx512

namespace avx2 {
using Vec = simd::avx2::Vec;
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include "backend/cpu/attention_body.inc"
#pragma GCC pop_options
}  // namespace avx2
#endif  // x86-64

namespace scalar {
using Vec = simd::scalar::Vec;
#include "backend/cpu/attention_body.inc"
}  // namespace scalar

}  // namespace

void attention_head(const AttentionHeadArgs& args, Isa isa) {
  MOENAV_CHECK(args.n_rows >= 0 && args.group >= 1 && args.head_dim >= 1);
  if (args.n_rows == 0) return;
  MOENAV_CHECK(args.kv_type == DType::F32 || args.kv_type == DType::F16);
  const bool half = args.kv_type == DType::F16;
  switch (isa) {
#if defined(__x86_64__) && defined(__GNUC__)
    case Isa::Avx512:
      return half ? avx512::attention_head_impl<uint16_t>(args)
                  : avx512::attention_head_impl<float>(args);
    case Isa::Avx2:
      return half ? avx2::attention_head_impl<uint16_t>(args)
                  : avx2::attention_head_impl<float>(args);
#endif
    default:
      return half ? scalar::attention_head_impl<uint16_t>(args)
                  : scalar::attention_head_impl<float>(args);
  }
}

void attention_head_reference(const AttentionHeadArgs& args) {
  const bool half = args.kv_type == DType::F16;
  auto element = [half](const void* base, int64_t index) -> double {
    return half ? simd::to_f32(static_cast<const uint16_t*>(base)[index])
                : static_cast<const float*>(base)[index];
  };
  std::vector<double> scores;
  for (int64_t r = 0; r < args.n_rows; ++r) {
    for (int64_t g = 0; g < args.group; ++g) {
      const float* query = args.queries + r * args.row_stride + g * args.head_dim;
      float* output = args.output + r * args.output_stride + g * args.head_dim;
      const int64_t first = args.first[r], last = args.last[r];
      double max_score = args.sinks ? args.sinks[g] : -std::numeric_limits<double>::infinity();
      scores.assign(static_cast<size_t>(last - first + 1), 0.0);
      for (int64_t j = first; j <= last; ++j) {
        const int64_t key = (j / kKeyBlock) * args.key_block_stride + j % kKeyBlock;
        double dot = 0.0;
        for (int64_t d = 0; d < args.head_dim; ++d) {
          dot += query[d] * element(args.key_blocks, key + d * kKeyBlock);
        }
        scores[static_cast<size_t>(j - first)] = dot * args.scale;
        max_score = std::max(max_score, scores[static_cast<size_t>(j - first)]);
      }
      double sum = args.sinks ? std::exp(args.sinks[g] - max_score) : 0.0;
      for (double& score : scores) {
        score = std::exp(score - max_score);
        sum += score;
      }
      for (int64_t d = 0; d < args.head_dim; ++d) {
        double value = 0.0;
        for (int64_t j = first; j <= last; ++j) {
          const double weight = scores[static_cast<size_t>(j - first)];
          value += weight * element(args.values, j * args.value_stride + d);
        }
        output[d] = static_cast<float>(value / sum);
      }
    }
  }
}

}  // namespace moenav::cpu
