// Causal attention of the query heads that share one KV head (GQA), on f32 caches. This is the
// inner loop of layers/attention.cpp: prefill calls it with hundreds of rows, decode with one.
//
// The kernel walks the keys in blocks of kKeyBlock positions (flash-attention style, online
// softmax). Keys come already transposed per block, [head_dim, kKeyBlock] (the KV cache stores
// them so), so the q.k products are FMAs over lanes of keys without horizontal sums, and one
// pass over the cache serves all rows of a prefill chunk. Compiled once per instruction set,
// like the matmul kernels.
#pragma once

#include <cstdint>

#include "backend/cpu/cpu_isa.h"
#include "core/dtype.h"

namespace moenav::cpu {

constexpr int64_t kKeyBlock = 64;  // positions per key block

// Legend: R = rows (tokens), G = query heads per KV head, D = head_dim.
struct AttentionHeadArgs {
  const float* queries = nullptr;  // row r, head g at queries + r * row_stride + g * head_dim
  int64_t row_stride = 0;
  int64_t n_rows = 0;              // R
  int64_t group = 1;               // G
  int64_t head_dim = 0;            // D
  float scale = 1.0f;              // applied to every q.k
  // Cached keys and values, of kv_type elements (F32, or F16: IEEE halves). Keys of positions
  // [b * kKeyBlock, (b + 1) * kKeyBlock) at element b * key_block_stride of key_blocks,
  // [D, kKeyBlock]: dimension d of position j at [d * kKeyBlock + j % kKeyBlock]. Values of
  // position j at element j * value_stride of values, D of them.
  DType kv_type = DType::F32;
  const void* key_blocks = nullptr;
  int64_t key_block_stride = 0;
  const void* values = nullptr;
  int64_t value_stride = 0;
  const int64_t* first = nullptr;  // [R] earliest visible position of each row
  const int64_t* last = nullptr;   // [R] latest visible position (inclusive), >= first
  const float* sinks = nullptr;    // [G] an extra softmax logit per head (gpt-oss), or nullptr
  float* output = nullptr;         // same layout as queries, row stride output_stride
  int64_t output_stride = 0;
};

void attention_head(const AttentionHeadArgs& args, Isa isa = best_isa());

// The plain reference: two passes, exact exp, double sums.
void attention_head_reference(const AttentionHeadArgs& args);

}  // namespace moenav::cpu
