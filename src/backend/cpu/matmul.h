// Matrix products of a weight tensor (any dtype) with float32 activations, the hot loop of the
// engine. Quantized weights use integer dot products on activations quantized on the fly to the
// weight type's activation format (as llama.cpp does); float weights dot in float32.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "backend/cpu/cpu_isa.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace moenav::cpu {

// output[t, n] = sum_k input[t, k] * weight[n, k]
//   weight: [N, K] (any dtype), input: [n_tokens, K] f32 row-major, output: [n_tokens, N] f32.
// Splits the work across the pool by rows of the weight, in chunks of whole 64-byte output lines,
// waking only as many threads as the work pays for. Quantized activations are prepared once per
// call, in parallel, and shared by all threads.
void matmul(const TensorView& weight, const float* input, int64_t n_tokens, float* output,
            ThreadPool& pool);

// Several products of one input (attention's q, k and v): outputs[i] = input x weights[i]^T,
// as matmul computes each, bit for bit, but with the input prepared once per activation format
// and one parallel region over the weights' rows taken end to end. Weights share K; at most
// kMaxSharedInput of them.
constexpr size_t kMaxSharedInput = 4;
void matmul_shared_input(std::span<const TensorView* const> weights, const float* input,
                         int64_t n_tokens, std::span<float* const> outputs, ThreadPool& pool);

// Single-threaded, for callers that split work themselves (experts running side by side):
// computes output[t, n] for n in [row_begin, row_end). output_stride is the row pitch of output.
void matmul_rows(const TensorView& weight, const float* input, int64_t n_tokens, float* output,
                 int64_t output_stride, int64_t row_begin, int64_t row_end);

// The same with the instruction set forced (tests and benchmarks compare the variants); isa must
// be supported (isa_supported).
void matmul(Isa isa, const TensorView& weight, const float* input, int64_t n_tokens, float* output,
            ThreadPool& pool);
void matmul_rows(Isa isa, const TensorView& weight, const float* input, int64_t n_tokens,
                 float* output, int64_t output_stride, int64_t row_begin, int64_t row_end);

// Q8_0 activations regrouped for the AVX-512 kernels of Q8_0 and Q4_0 weights, four blocks per
// quad: `low` holds elements 0..15 of each block in turn and `high` elements 16..31 (the order of
// four Q4_0 blocks' low and high nibbles), one 512-bit vector each. Lane j (bytes 4j..4j+3 of
// both, block j / 4) carries minus the sum of its 8 quants, which turns the dot of unsigned-biased
// weights (w + 128 for Q8_0, the raw levels w + 8 for Q4_0) back into the signed one, and its
// block's scale in f32. A row's last quad is padded with zero blocks (quants, sums, scales 0).
struct alignas(64) Q8_0Quad {
  int8_t low[64];
  int8_t high[64];
  int32_t sums[16];
  float scales[16];
};
constexpr int kQuadBlocks = 4;
inline int64_t quads_per_row(int64_t n_blocks) {
  return (n_blocks + kQuadBlocks - 1) / kQuadBlocks;
}

// Activations prepared once for a weight dtype: quantized to its activation format (Q8_0 for
// Q8_0/Q4_0, Q8_K for Q4_K/Q5_K/Q6_K) or kept as f32 (float weights, and block types without an
// integer kernel, which dequantize). One preparation serves every weight with the same activation
// format and K: all experts of a layer, or gate and up projections.
struct PreparedInput {
  DType format = DType::F32;
  int64_t n_tokens = 0;
  int64_t cols = 0;                // K
  const float* values = nullptr;   // [n_tokens, K] f32 (not owned), always set
  std::vector<uint8_t> quantized;  // [n_tokens, row_bytes()] when format != F32
  // Q8_0 on CPUs with AVX-512: [n_tokens, quads_per_row(blocks)] the same quants regrouped.
  std::vector<Q8_0Quad> quads;
  int64_t row_bytes() const { return dtype_bytes(format, cols); }
};

// The activation format matmul uses for this weight dtype (F32 when it multiplies in float).
DType input_format_for(DType weight_type);

// Fills `prepared` for `weight_type` (reusing its buffer). With a pool, tokens are quantized in
// parallel. input must outlive the uses of prepared.
void prepare_input(DType weight_type, const float* input, int64_t n_tokens, int64_t cols,
                   PreparedInput& prepared, ThreadPool* pool = nullptr);

// How matmul splits a weight's rows: `threads` threads (only as many as the work of n_tokens
// tokens pays for) take chunks of `chunk` rows, a multiple of 16 (whole 64-byte output lines);
// thread i takes rows [i * chunk, min(rows, (i + 1) * chunk)). For callers that run several
// products in one parallel region.
struct RowSplit {
  int64_t threads = 1;
  int64_t chunk = 0;
  // Thread `thread`'s rows [first, second) of n_rows (empty past the last chunk).
  std::pair<int64_t, int64_t> rows_of(int thread, int64_t n_rows) const {
    const int64_t begin = std::min(n_rows, thread * chunk);
    return {begin, std::min(n_rows, begin + chunk)};
  }
};
RowSplit split_rows(const TensorView& weight, int64_t n_tokens, int pool_size);
// The same for n_rows rows of weight_bytes in all (several weights taken end to end).
RowSplit split_rows(int64_t n_rows, int64_t weight_bytes, int64_t n_tokens, int pool_size);

// matmul_rows on a prepared input (input.format must be input_format_for(weight.dtype)).
void matmul_rows(const TensorView& weight, const PreparedInput& input, float* output,
                 int64_t output_stride, int64_t row_begin, int64_t row_end, Isa isa = best_isa());

}  // namespace moenav::cpu
