// Internal interface between matmul.cpp (threading, dispatch) and the kernel families
// (matmul_float.cpp, dot_q8_0.cpp, dot_k_quants.cpp). Not for use outside backend/cpu.
#pragma once

#include <cstdint>

#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/matmul.h"
#include "core/dtype.h"

namespace moenav::cpu::detail {

// Float path: output[t * output_stride + n] = dot(weight row n, input row t) for n in
// [row_begin, row_end). weight rows are row_bytes apart and k_count elements long; input is
// [n_tokens, k_count] f32. F32/F16/BF16 weights are read directly; other dtypes are dequantized
// (the fallback for formats without an integer kernel).
void matmul_float_rows(Isa isa, DType dtype, const uint8_t* weight, int64_t row_bytes,
                       int64_t k_count, const float* input, int64_t n_tokens, float* output,
                       int64_t output_stride, int64_t row_begin, int64_t row_end);

// Integer path: one weight row (n_blocks blocks) against n_tokens (1..kDotTokens) rows of
// quantized activations (Q8_0 or Q8_K blocks, or Q8_0Quad rows where reads_activation_quads;
// rows activation_row_bytes apart): output[t * output_stride] = dot(weight row, activation row t).
constexpr int kDotTokens = 4;
using DotFn = void (*)(const uint8_t* weight_row, const uint8_t* activations,
                       int64_t activation_row_bytes, int n_tokens, int64_t n_blocks, float* output,
                       int64_t output_stride);

// The same for kDotRows consecutive weight rows (weight_row_bytes apart) at once, for families
// with a register-tiled kernel: output[t * output_stride + r] = dot(weight row r, activation
// row t). Bit-identical to kDotRows calls of the family's DotFn.
constexpr int kDotRows = 4;
using DotRowsFn = void (*)(const uint8_t* weight, int64_t weight_row_bytes,
                           const uint8_t* activations, int64_t activation_row_bytes, int n_tokens,
                           int64_t n_blocks, float* output, int64_t output_stride);

// One f32 row to Q8_0 or Q8_K blocks, bit-identical to quant::quantize_row on every isa
// (quantize_activations.cpp).
void quantize_activation_row(Isa isa, DType format, const float* input, uint8_t* output, int64_t n);

// PreparedInput::quads of one Q8_0 row of n_blocks blocks (quads_per_row of them), the same on
// every isa.
void activation_quads(Isa isa, const uint8_t* q8_0_row, int64_t n_blocks, Q8_0Quad* quads);

// Whether the family's kernels for this weight type read PreparedInput::quads (the activations
// pointer of DotFn / DotRowsFn then points at Q8_0Quad rows) rather than the Q8_0 blocks.
bool reads_activation_quads(Isa isa, DType weight_type);

// How a DotFn reads the weight rows of a one-token call: Streamed prefetches them ahead
// (prefetch.h), for row ranges too large to stay in cache; Cached leaves it to the hardware.
// Both give the same bits; calls of more tokens are the same in both.
enum class WeightRead { Cached, Streamed };

// nullptr when the family has no kernel for this weight type. The scalar kernels ignore `read`.
// Q8_0, Q4_0 x Q8_0 (dot_q8_0.cpp); Q2_K..Q6_K x Q8_K (dot_k_quants.cpp); Q4_K, Q5_K, Q6_K on
// AVX-512 (dot_k_quants_avx512.cpp).
DotFn dot_q8_0_family(Isa isa, DType weight_type, WeightRead read = WeightRead::Cached);
DotFn dot_k_quant_family(Isa isa, DType weight_type, WeightRead read = WeightRead::Cached);
DotFn dot_k_quant_avx512_family(DType weight_type, WeightRead read);
DotRowsFn dot_q8_0_rows_family(Isa isa, DType weight_type);  // nullptr: no tiled kernel

// The integer-path DotFn for a weight type: the Q8_0 family's, else the k-quant family's; nullptr
// when neither has one (matmul.cpp).
DotFn integer_dot(Isa isa, DType weight_type, WeightRead read = WeightRead::Cached);

}  // namespace moenav::cpu::detail
