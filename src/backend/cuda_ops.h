// The CUDA backend's kernels, one per op of the CPU backend, on device pointers and the
// context's compute stream. Each returns the Status of its launch (bad arguments are reported
// here); errors while the kernel runs surface at the next Context::synchronize(). The CPU
// backend is the reference: tests/ops/test_cuda_ops.cpp checks every op against it.
//
// Legend: T = tokens, N = output rows of a weight, K = its input width, H = query heads,
// KVH = key/value heads, D = head dim, P = cached positions, E = experts.
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend/cuda.h"
#include "core/dtype.h"

namespace moenav::cuda {

// A weight matrix [N, K] in device memory, rows stored like TensorView's (ggml block layouts).
struct DeviceWeight {
  DType dtype = DType::F32;
  int64_t rows = 0;  // N
  int64_t cols = 0;  // K
  const void* data = nullptr;
  int64_t row_bytes() const { return dtype_bytes(dtype, cols); }
};

// The three projections of one gated FFN (an expert, a shared expert or a dense block), and
// their optional f32 biases (gpt-oss's experts; null when absent).
struct DeviceFfn {
  DeviceWeight gate, up, down;
  const float* gate_bias = nullptr;
  const float* up_bias = nullptr;
  const float* down_bias = nullptr;
};

// The weight types matmul multiplies.
inline bool matmul_supported(DType weight_type) {
  switch (weight_type) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::Q8_0: case DType::Q4_0:
    case DType::Q4_K: case DType::Q5_K: case DType::Q6_K:
      return true;
    default:
      return false;
  }
}

// output[t, n] = sum_k input[t, k] * weight[n, k]; input [T, K] and output [T, N] f32.
// Up to kMatvecMaxTokens tokens (decode), a block of threads per few weight rows dequantizes them
// once for all tokens and accumulates in f32. More tokens (prefill) dequantize the weight in
// slices into scratch and run cuBLAS GEMMs at the context's GemmPrecision.
constexpr int64_t kMatvecMaxTokens = 8;
Status matmul(Context& context, const DeviceWeight& weight, const float* input, int64_t n_tokens,
              float* output);
// Several weights times the same input (attention's q, k and v; an FFN's gate and up): in
// decode, one launch when they share a type and width (fewer launches a token, and small
// matrices fill the GPU together); otherwise one matmul each.
constexpr size_t kMaxMatmulParts = 3;
struct MatmulPart {
  DeviceWeight weight;
  float* output = nullptr;
};
Status matmul_parts(Context& context, const MatmulPart* parts, size_t n_parts, const float* input,
                    int64_t n_tokens);
// One layer's experts, of one type and shape per projection, as device tables indexed by expert:
// each projection's matrix (in the shape's type; the shapes' data unused) and, optionally, its
// f32 bias (gpt-oss; null tables: no biases).
struct ExpertTables {
  DeviceWeight gate, up, down;  // shapes only
  const void* const* gate_data = nullptr;
  const void* const* up_data = nullptr;
  const void* const* down_data = nullptr;
  const float* const* gate_bias = nullptr;
  const float* const* up_bias = nullptr;
  const float* const* down_bias = nullptr;
};
// The routed experts of a decode step whose routing was chosen on the device (router_top_k),
// every (token, slot) pair p = token * k + slot in one launch per projection: pair p runs expert
// selected[p] of the tables. No trip to the host for the selection.
struct SelectedExperts {
  ExpertTables tables;
  const int32_t* selected = nullptr;  // [n_pairs]
  int64_t n_pairs = 0;                // tokens * k, at most 65535
  int64_t k = 0;                      // pairs per token
};
// The experts' activation: SwiGLU, or gpt-oss's clamped one (see clamped_swiglu).
struct GluArgs {
  bool clamped = false;
  float alpha = 1.702f;
  float limit = 7.0f;
};
// activated[p, :] = act(gate . x + gate_bias, up . x + up_bias) of pair p's expert, x = input[p / k]:
// [n_pairs, N].
Status selected_gate_up(Context& context, const SelectedExperts& experts, const float* input,
                        const GluArgs& glu, float* activated);
// output[p, :] = down . activated[p] + down_bias of pair p's expert: [n_pairs, hidden].
Status selected_down(Context& context, const SelectedExperts& experts, const float* activated,
                     float* output);
// output[t, :] = the sum over slots, in slot order (as the CPU's Combine), of weights[p] *
// pair_output[p, :], p = t * k + slot, or pair_rows[t * k + slot] where given (device [T * k];
// a negative row: a skipped selection, left out).
Status combine_slots(Context& context, const float* pair_output, const float* weights,
                     int64_t n_tokens, int64_t k, int64_t width, float* output,
                     const int32_t* pair_rows = nullptr);

// The routed experts of a prefill batch routed on the host, grouped: the (token, slot) pairs
// sorted by expert, group g the rows [group_first[g], group_first[g + 1]) of expert
// group_experts[g] of the tables, every group in one launch per projection.
// Weights are dequantized tile by tile into shared memory and multiplied on tensor cores: bf16
// inputs (bf16 rows: uint16_t bits), f32 accumulation, as the bf16 GEMM of matmul.
constexpr int64_t kGroupedTileRows = 64;  // pair rows per tile
// The row tiles of a group of `group_rows` pairs; n_row_tiles sums them over the groups.
int64_t grouped_row_tiles(int64_t group_rows);
struct GroupedExperts {
  ExpertTables tables;
  const int32_t* group_experts = nullptr;  // device [n_groups]
  const int32_t* group_first = nullptr;    // device [n_groups + 1]
  int64_t n_groups = 0;
  int64_t n_row_tiles = 0;                 // at most 65535
};
// activated[p, :] = bf16(act(gate . x + gate_bias, up . x + up_bias)) of the pair's expert,
// x = input[p]: [pairs, N].
Status grouped_gate_up(Context& context, const GroupedExperts& experts, const uint16_t* input,
                       const GluArgs& glu, uint16_t* activated);
// output[p, :] = down . activated[p] + down_bias of the pair's expert: f32 [pairs, hidden].
Status grouped_down(Context& context, const GroupedExperts& experts, const uint16_t* activated,
                    float* output);
// dst[i, :] = bf16(src[rows[i], :]): the grouped experts' input rows.
Status gather_rows_bf16(Context& context, const float* src, int64_t cols, const int32_t* rows,
                        int64_t n, uint16_t* dst);

// output[r, :] = input[r, :] / sqrt(mean(input[r, :]^2) + eps) * weight; output may alias input.
Status rms_norm(Context& context, const float* input, const float* weight, float* output,
                int64_t n_rows, int64_t dim, float eps);
// hidden += residual, then output = rms_norm(hidden): the residual add that ends a block and the
// norm that starts the next, in one launch. output must not alias hidden or residual.
Status add_rms_norm(Context& context, float* hidden, const float* residual, const float* weight,
                    float* output, int64_t n_rows, int64_t dim, float eps);

// Rotates, in place, the first rotary_dim dimensions of n_heads heads of each token (and of
// n_key_heads heads of keys), as
// moenav::Rope does: NeoX pairs (i, i + d/2), interleaved pairs (2i, 2i + 1); cos and sin of
// position * inverse_frequency[i], scaled by attention_factor.
struct RopeArgs {
  float* x = nullptr;                         // head h of token t at x + t * token_stride + h * head_stride
  int64_t n_tokens = 0;
  int64_t n_heads = 0;
  int64_t head_stride = 0;
  int64_t token_stride = 0;
  int64_t rotary_dim = 0;                     // even
  const float* inverse_frequency = nullptr;   // device [rotary_dim / 2]
  const int32_t* positions = nullptr;         // device [T]
  bool neox = true;
  float attention_factor = 1.0f;
  // Optionally the keys too, in the same launch: head h of token t at keys + t * key_token_stride
  // + h * head_stride, n_key_heads of them.
  float* keys = nullptr;
  int64_t n_key_heads = 0;
  int64_t key_token_stride = 0;
};
Status rope(Context& context, const RopeArgs& args);

// output = silu(gate) * up, elementwise over n floats.
Status silu_mul(Context& context, const float* gate, const float* up, float* output, int64_t n);
// gpt-oss's clamped SwiGLU, elementwise over n floats: with g' = min(gate, limit),
// output = (clamp(up, -limit, limit) + 1) * g' * sigmoid(alpha * g'). output may alias gate.
Status clamped_swiglu(Context& context, const float* gate, const float* up, float* output,
                      int64_t n, float alpha, float limit);
// output = a + b, elementwise (the residual); output may alias either.
Status add(Context& context, const float* a, const float* b, float* output, int64_t n);
// rows[r, i] += bias[i] for [n_rows, width] rows; nothing when bias is null.
Status add_bias(Context& context, float* rows, const float* bias, int64_t n_rows, int64_t width);
// output[r, i] += sigmoid(gate_logits[r]) * addend[r, i] (Qwen2-MoE's gated shared expert).
Status add_gated(Context& context, float* output, const float* addend, const float* gate_logits,
                 int64_t n_rows, int64_t width);
// destination[r * destination_stride + i] = source[r * source_stride + i] for i < width: the
// columns of a row-major block copied out of or into a wider one (MLA's per-head slices).
Status copy_columns(Context& context, const float* source, int64_t source_stride, float* destination,
                    int64_t destination_stride, int64_t n_rows, int64_t width);

// Router scores and top-k, as select_experts (layers/moe/router.h) computes them for a model
// without expert groups: Softmax and Sigmoid score every expert (a selection bias shifts only
// the ranking), SoftmaxOfTopK softmaxes the k best logits. Ties go to the lower index.
enum class RouterScore { Softmax, Sigmoid, SoftmaxOfTopK };
struct RouterArgs {
  const float* logits = nullptr;          // [T, E]
  const float* selection_bias = nullptr;  // [E] or nullptr
  int64_t n_tokens = 0;
  int64_t n_experts = 0;                  // E <= 256
  int64_t k = 0;                          // k <= 16, k <= E
  RouterScore score = RouterScore::Softmax;
  bool normalize = true;                  // renormalize the selected weights to sum to 1
  float scale = 1.0f;                     // routed_scaling_factor
  int32_t* experts = nullptr;             // [T, k]
  float* weights = nullptr;               // [T, k]
};
Status router_top_k(Context& context, const RouterArgs& args);

// Writes n_rows rows of `width` floats into a K/V cache of `type`, row r at the cache row of
// position positions[r] (device [n_rows]; a row is `width` elements): F32 as they are, F16
// saturated to +-65504 and rounded to nearest even, as the CPU's KvCache stores them. The
// positions are read on the device, so a recorded graph stores each step where it belongs.
// With values and value_cache, their rows go to their cache in the same launch.
Status store_kv(Context& context, const float* keys, void* key_cache, int64_t width,
                const int32_t* positions, int64_t n_rows, DType type, const float* values = nullptr,
                void* value_cache = nullptr);

// Causal attention over f32 or f16 K/V caches (flash-decoding: the visible keys are split into chunks
// processed in parallel, then merged). Token t is at position positions[t] (read on the device),
// or first_position + t without positions, and sees positions [max(0, its position - window + 1)
// when window > 0, else 0, its position].
struct AttentionArgs {
  const float* queries = nullptr;  // [T, H, D]
  const void* keys = nullptr;      // [P, KVH, D] of kv_type
  const void* values = nullptr;    // [P, KVH, D] of kv_type
  DType kv_type = DType::F32;      // F32 or F16
  const float* sinks = nullptr;    // [H] an extra softmax logit per head (gpt-oss), or nullptr
  float* output = nullptr;         // [T, H, D]
  int64_t n_tokens = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;          // divides n_heads
  int64_t head_dim = 0;            // <= 576 (MLA's latent and rotary key)
  int64_t first_position = 0;
  const int32_t* positions = nullptr;  // device [T], or nullptr
  // Above every position: how many key splits to launch (empty ones cost little, so a graph can
  // use the cache's capacity); 0: first_position + n_tokens.
  int64_t max_positions = 0;
  int64_t window = 0;
  float scale = 1.0f;
};
Status attention(Context& context, const AttentionArgs& args);

// Mixture-of-experts dispatch: the rows routed to one expert are gathered into a dense block,
// multiplied (matmul), and the results added back weighted. dst[i, :] = src[rows[i], :].
Status gather_rows(Context& context, const float* src, int64_t cols, const int32_t* rows,
                   int64_t n, float* dst);
// dst[rows[i], :] += weights[i] * src[i, :]; rows must be distinct within one call.
Status scatter_add_rows(Context& context, const float* src, int64_t cols, const int32_t* rows,
                        const float* weights, int64_t n, float* dst);

}  // namespace moenav::cuda
