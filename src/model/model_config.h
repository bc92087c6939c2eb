// Architecture-neutral hyper-parameters plus feature flags. The forward pass is written once
// against this struct; an architecture file (src/model/arch/) only fills it in and declares the
// tensor names that differ.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace moenav {

// How router logits become expert weights. Softmax and Sigmoid score every expert before the
// top-k; SoftmaxTopk (gpt-oss) takes the top-k logits first and softmaxes only those.
enum class Gating { Softmax, Sigmoid, SoftmaxTopk };
// Group-limited routing (DeepSeek): a group's score is its best expert (V2) or the sum of its
// two best (V3); only the topk_group best groups may be selected from.
enum class GroupScore { Max, TopTwoSum };
enum class AttentionKind { Gqa, Mla };
// The expert feed-forward's activation: SiLU-gated (SwiGLU), or gpt-oss's clamped SwiGLU
// (gate clamped above at limit, up to [-limit, limit], out = (up + 1) * gate * sigmoid(alpha *
// gate)).
enum class FfnActivation { Swiglu, ClampedSwiglu };
enum class RopeScaling { None, Yarn };
// How RoPE pairs dimensions: NeoX/HF rotates (i, i + d/2); the original GPT-J/Meta layout
// rotates (2i, 2i + 1). llama.cpp's converter permutes Llama/Mixtral q/k rows to the latter.
enum class RopeStyle { Neox, Interleaved };

struct ModelConfig {
  std::string arch;  // registry name: "mixtral", "qwen3_moe", ...
  int64_t n_layers = 0;
  int64_t hidden = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab = 0;
  int64_t context_length = 2048;
  float norm_eps = 1e-5f;
  double rope_theta = 10000.0;
  RopeStyle rope_style = RopeStyle::Neox;
  // transformers keeps RoPE's inverse frequencies in a buffer that takes the checkpoint's dtype,
  // so a bf16 checkpoint runs RoPE with bf16-rounded frequencies (and was trained that way).
  // F32 for GGUF files, as llama.cpp computes them.
  DType rope_frequency_dtype = DType::F32;
  bool qk_norm = false;         // RMSNorm on each head of q and k (Qwen3)
  bool qk_norm_full_width = false;  // ... over the whole projection instead of each head (OLMoE)
  bool attention_bias = false;  // biases on q/k/v projections
  bool attention_output_bias = false;  // bias on the output projection (gpt-oss)
  bool attention_sinks =
      false;  // a learned per-head logit joins each softmax denominator (gpt-oss)
  // Layers with layer_sliding_window[l] attend to the last `sliding_window` positions only.
  int64_t sliding_window = 0;
  std::vector<bool> layer_sliding_window;  // [n_layers], empty = none
  float attention_scale = 0.0f;            // softmax scale; 0 = 1/sqrt(query-key head dim)
  bool tie_embeddings = false;

  // RoPE: the first rope_dim dimensions of each head rotate (0 = head_dim). YaRN (gpt-oss,
  // DeepSeek long-context) blends interpolated and extrapolated frequencies and scales cos/sin.
  int64_t rope_dim = 0;
  RopeScaling rope_scaling = RopeScaling::None;
  double rope_factor = 1.0;
  int64_t rope_original_context = 0;
  double yarn_beta_fast = 32.0, yarn_beta_slow = 1.0;
  bool yarn_truncate = true;  // round the correction range to whole dimensions
  double yarn_mscale = 0.0, yarn_mscale_all_dim = 0.0;  // DeepSeek's attention-factor knobs
  double yarn_attention_factor = 0.0;  // cos/sin scale; 0 = derived from factor and mscale

  // Multi-head latent attention (DeepSeek): the cache holds a kv_lora_rank latent and one shared
  // qk_rope_dim rotary key per position. head_dim = qk_nope_dim + qk_rope_dim for queries/keys.
  AttentionKind attention = AttentionKind::Gqa;
  int64_t q_lora_rank = 0;  // 0 = a direct q projection
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_dim = 0;
  int64_t qk_rope_dim = 0;
  int64_t v_head_dim = 0;

  // Feed-forward: MoE layers route to n_experts of expert_ffn width; dense layers use dense_ffn.
  int64_t n_experts = 0;
  int64_t n_experts_used = 0;  // top-k
  int64_t expert_ffn = 0;
  int64_t dense_ffn = 0;
  Gating gating = Gating::Softmax;
  bool norm_topk_prob = true;  // renormalize the selected experts' weights to sum to 1
  float routed_scaling_factor = 1.0f;
  bool router_bias = false;  // a bias on the router logits (gpt-oss)
  bool expert_selection_bias =
      false;                    // e_score_correction_bias: added for selection only (DeepSeek-V3)
  int64_t n_expert_groups = 1;  // group-limited top-k when > 1
  int64_t n_expert_groups_used = 1;
  GroupScore group_score = GroupScore::TopTwoSum;
  bool expert_bias = false;  // biases in the experts' projections (gpt-oss)
  FfnActivation expert_activation = FfnActivation::Swiglu;
  float swiglu_alpha = 1.702f, swiglu_limit = 7.0f;
  // Shared experts run on every token beside the routed ones, as one FFN of shared_expert_ffn
  // width (n_shared_experts experts concatenated); Qwen2-MoE scales it by sigmoid(x . gate).
  int64_t n_shared_experts = 0;
  int64_t shared_expert_ffn = 0;
  bool shared_expert_gate = false;
  std::vector<bool> layer_is_moe;  // [n_layers]

  std::optional<int32_t> bos_token;
  std::optional<int32_t> eos_token;

  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
  int64_t rotary_dim() const { return rope_dim > 0 ? rope_dim : head_dim; }
  bool is_moe_layer(int64_t layer) const { return layer_is_moe[static_cast<size_t>(layer)]; }
  bool uses_sliding_window(int64_t layer) const {
    return sliding_window > 0 && !layer_sliding_window.empty() &&
           layer_sliding_window[static_cast<size_t>(layer)];
  }
  // Floats one position of one layer keeps in the KV cache: the latent and rotary key for MLA,
  // keys and values for GQA.
  int64_t kv_cache_width() const {
    return attention == AttentionKind::Mla ? kv_lora_rank + qk_rope_dim : 2 * kv_dim();
  }
};

}  // namespace moenav
