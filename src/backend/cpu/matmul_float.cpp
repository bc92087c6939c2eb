// Float-weight matrix products (F32, F16, BF16 weights, f32 activations, f32 accumulation), and
// the dequantize-then-multiply fallback for block formats without an integer kernel.
// The kernel body is matmul_float_tile.inc, compiled here once per instruction set.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "backend/cpu/matmul_kernels.h"
#include "backend/cpu/simd_vec.h"
#include "core/check.h"
#include "quant/quant.h"

namespace moenav::cpu::detail {

#if defined(__x86_64__) && defined(__GNUC__)

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")
namespace avx512 {
using Vec = simd::avx512::Vec;
#include "backend/cpu/matmul_float_tile.inc"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace avx2 {
using Vec = simd::avx2::Vec;
#include "backend/cpu/matmul_float_tile.inc"
}  // namespace avx2
#pragma GCC pop_options

#endif  // x86-64

namespace scalar {
using Vec = simd::scalar::Vec;
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
