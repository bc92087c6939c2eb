// Matrix products of a weight tensor (any dtype) with float32 activations, the hot loop of the
// engine. Quantized weights use integer dot products on activations quantized on the fly to the
// weight type's activation format (as llama.cpp does); float weights dot in float32.
#pragma once

#include <cstdint>

#include "backend/cpu/cpu_isa.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace moenav::cpu {

// output[t, n] = sum_k input[t, k] * weight[n, k]
//   weight: [N, K] (any dtype), input: [n_tokens, K] f32 row-major, output: [n_tokens, N] f32.
// Splits the work across the pool (by rows of the weight for decode, by blocks for prefill).
void matmul(const TensorView& weight, const float* input, int64_t n_tokens, float* output,
            ThreadPool& pool);

// Single-threaded, for callers that split work themselves (experts running side by side):
// computes output[t, n] for n in [row_begin, row_end). output_stride is the row pitch of output.
void matmul_rows(const TensorView& weight, const float* input, int64_t n_tokens, float* output,
                 int64_t output_stride, int64_t row_begin, int64_t row_end);

// The same with the instruction set forced (tests and benchmarks compare the variants); isa must
// be supported (isa_supported).
void matmul(Isa isa, const TensorView& weight, const float* input, int64_t n_tokens,
            float* output, ThreadPool& pool);
void matmul_rows(Isa isa, const TensorView& weight, const float* input, int64_t n_tokens,
                 float* output, int64_t output_stride, int64_t row_begin, int64_t row_end);

}  // namespace moenav::cpu
