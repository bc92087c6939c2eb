#include "backend/cpu/activation.h"

#include "backend/cpu/simd_vec.h"

namespace moenav::cpu {
namespace {

// The body for one instruction set; the tail (n not a multiple of the lanes) goes through the
// scalar Vec. exp's argument is clamped to 88, where it is still finite: silu is then gate x 0
// to float precision.
template <typename Vec>
inline int64_t silu_mul_vectors(float* gate, const float* up, int64_t n) {
  const typename Vec::V one = Vec::set1(1.0f);
  const typename Vec::V exp_high = Vec::set1(88.0f);
  int64_t i = 0;
  for (; i + Vec::kLanes <= n; i += Vec::kLanes) {
    const typename Vec::V g = Vec::load(gate + i);
    const typename Vec::V e = Vec::exp(Vec::min(Vec::sub(Vec::zero(), g), exp_high));
    Vec::store(gate + i, Vec::mul(Vec::div(g, Vec::add(one, e)), Vec::load(up + i)));
  }
  return i;
}

template <typename Vec>
inline void silu_mul_body(float* gate, const float* up, int64_t n) {
  const int64_t done = silu_mul_vectors<Vec>(gate, up, n);
  silu_mul_vectors<simd::scalar::Vec>(gate + done, up + done, n - done);
}

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma")
void silu_mul_avx512(float* gate, const float* up, int64_t n) {
  silu_mul_body<simd::avx512::Vec>(gate, up, n);
}
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
void silu_mul_avx2(float* gate, const float* up, int64_t n) {
  silu_mul_body<simd::avx2::Vec>(gate, up, n);
}
#pragma GCC pop_options
#endif

}  // namespace

void silu_mul(float* gate, const float* up, int64_t n, Isa isa) {
  switch (isa) {
#if defined(__x86_64__) && defined(__GNUC__)
    case Isa::Avx512: return silu_mul_avx512(gate, up, n);
    case Isa::Avx2: return silu_mul_avx2(gate, up, n);
#endif
    default:
      silu_mul_vectors<simd::scalar::Vec>(gate, up, n);
  }
}

}  // namespace moenav::cpu
