// One forward pass works on a batch of token rows that may come from several sequences (prefill
// chunks and decode steps of different requests together). Everything but attention treats the
// rows alike; attention reads each row's own KV cache up to its own position.
#pragma once

#include <cstdint>
#include <vector>

#include "layers/kv_cache.h"

namespace moenav {

struct BatchRow {
  KvCache* cache;    // the row's sequence
  int64_t position;  // where the row's token sits in its sequence
};

struct Workspace {
  std::vector<float> hidden;       // [T, hidden]   the residual stream
  std::vector<float> normed;       // [T, hidden]
  std::vector<float> q;            // [T, q_dim]
  std::vector<float> k;            // [T, kv_dim]
  std::vector<float> v;            // [T, kv_dim]
  std::vector<float> attention;    // [T, q_dim]
  std::vector<float> projected;    // [T, hidden]
  std::vector<float> block_output; // [T, hidden]  a block's update to the residual stream
  std::vector<float> scores;       // [threads, context]
  std::vector<float> router_logits;  // [T, n_experts]
  std::vector<float> expert_input;   // [T, hidden]   rows gathered for one expert
  std::vector<float> ffn_gate;       // [T, ffn]
  std::vector<float> ffn_up;         // [T, ffn]
  std::vector<float> expert_output;  // [T * k, hidden] per (row, slot)
  std::vector<float> shared_output;  // [T, hidden]   the shared experts' contribution
  // Multi-head latent attention (attention_mla.cpp)
  std::vector<float> mla_q_a;       // [T, q_lora_rank]
  std::vector<float> mla_kv;        // [T, kv_lora_rank + qk_rope]  latent and rotary key
  std::vector<float> mla_q_latent;  // [T, n_heads, kv_lora_rank]  queries with k_b absorbed
  std::vector<float> mla_o_latent;  // [T, n_heads, kv_lora_rank]  attention-weighted latents
  std::vector<float> mla_head_in;   // [T, max(qk_nope, kv_lora_rank)]  one head's rows
  std::vector<float> mla_head_out;  // [T, max(kv_lora_rank, v_head_dim)]
};

}  // namespace moenav
