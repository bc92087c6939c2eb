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
  TensorView gate_bias, up_bias, down_bias;  // [ffn], [ffn], [hidden] f32, expert_bias only
  int64_t bytes() const {
    return gate.bytes() + up.bytes() + down.bytes() + gate_bias.bytes() + up_bias.bytes() +
           down_bias.bytes();
  }
};

// Multi-head latent attention (DeepSeek). k_b and v_b are kv_b split per head, k_b transposed so
// that a query absorbs it: q_latent[h] = k_b[h] . q_nope[h] (llama.cpp's attn_k_b / attn_v_b).
struct MlaWeights {
  TensorView q_a;        // [q_lora_rank, hidden], q LoRA only
  TensorView q_a_norm;   // [q_lora_rank] f32
  TensorView q_b;        // [n_heads * (qk_nope + qk_rope), q_lora_rank]
  TensorView q;          // [n_heads * (qk_nope + qk_rope), hidden], without q LoRA
  TensorView kv_a;       // [kv_lora_rank + qk_rope, hidden]
  TensorView kv_a_norm;  // [kv_lora_rank] f32
  TensorView k_b;        // [n_heads, kv_lora_rank, qk_nope]
  TensorView v_b;        // [n_heads, v_head_dim, kv_lora_rank]
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
  TensorView attn_output_bias;                       // [hidden] f32, attention_output_bias only
  TensorView attn_sinks;                             // [n_heads] f32, attention_sinks only
  MlaWeights mla;                                    // attention == Mla (attn_q/k/v unused)

  TensorView ffn_norm;              // [hidden] f32
  TensorView router;                // [n_experts, hidden], MoE layers
  TensorView router_bias;           // [n_experts] f32, router_bias only
  TensorView expert_selection_bias;  // [n_experts] f32, expert_selection_bias only
  std::vector<FfnWeights> experts;  // [n_experts], MoE layers
  FfnWeights shared_expert;         // [shared_expert_ffn] wide, n_shared_experts > 0
  TensorView shared_expert_gate;    // [hidden], shared_expert_gate only
  FfnWeights dense;                 // dense layers
};

struct ModelWeights {
  TensorView token_embedding;  // [vocab, hidden]
  TensorView output_norm;      // [hidden] f32
  TensorView output;           // [vocab, hidden]
  std::vector<LayerWeights> layers;
};

}  // namespace moenav
