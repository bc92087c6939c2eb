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

enum class Gating { Softmax, Sigmoid };
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
  bool attention_bias = false;  // biases on q/k/v projections
  bool tie_embeddings = false;

  // Feed-forward: MoE layers route to n_experts of expert_ffn width; dense layers use dense_ffn.
  int64_t n_experts = 0;
  int64_t n_experts_used = 0;  // top-k
  int64_t expert_ffn = 0;
  int64_t dense_ffn = 0;
  Gating gating = Gating::Softmax;
  bool norm_topk_prob = true;  // renormalize the selected experts' weights to sum to 1
  float routed_scaling_factor = 1.0f;
  std::vector<bool> layer_is_moe;  // [n_layers]

  std::optional<int32_t> bos_token;
  std::optional<int32_t> eos_token;

  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
  bool is_moe_layer(int64_t layer) const { return layer_is_moe[static_cast<size_t>(layer)]; }
};

}  // namespace moenav
