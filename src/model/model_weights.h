// The tensors of a loaded model, bound to canonical roles. Views point into the memory-mapped
// checkpoint (or into buffers the Model owns, for small vectors converted to f32 at load).
// Experts are per (layer, expert) views whether the file stacks them ([E, F, H], GGUF) or not
// (one tensor each, Hugging Face), so the expert store can address each one on its own.
#pragma once

#include <vector>

#include "core/tensor.h"

namespace moenav {

struct FfnWeights {
  TensorView gate;  // [ffn, hidden]
  TensorView up;    // [ffn, hidden]
  TensorView down;  // [hidden, ffn]
  int64_t bytes() const { return gate.bytes() + up.bytes() + down.bytes(); }
};

struct LayerWeights {
  TensorView attn_norm;    // [hidden] f32
  TensorView attn_q;       // [q_dim, hidden]
  TensorView attn_k;       // [kv_dim, hidden]
  TensorView attn_v;       // [kv_dim, hidden]
  TensorView attn_output;  // [hidden, q_dim]
  TensorView attn_q_norm;  // [head_dim] f32, qk_norm only
  TensorView attn_k_norm;  // [head_dim] f32, qk_norm only
  TensorView attn_q_bias, attn_k_bias, attn_v_bias;  // f32, attention_bias only

  TensorView ffn_norm;              // [hidden] f32
  TensorView router;                // [n_experts, hidden], MoE layers
  std::vector<FfnWeights> experts;  // [n_experts], MoE layers
  FfnWeights dense;                 // dense layers
};

struct ModelWeights {
  TensorView token_embedding;  // [vocab, hidden]
  TensorView output_norm;      // [hidden] f32
  TensorView output;           // [vocab, hidden]
  std::vector<LayerWeights> layers;
};

}  // namespace moenav
