// Mixtral: Llama attention (GQA, RoPE) with a softmax top-k MoE in every layer; the selected
// experts' weights are renormalized. llama.cpp writes it as GGUF "llama" with expert tensors and
// permutes q/k rows for interleaved RoPE.
#include <algorithm>

#include "io/gguf.h"
#include "model/arch/architecture.h"

namespace moenav {
namespace {

constexpr NameRule kHfNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
    {"model.layers.{L}.input_layernorm.weight", "blk.{L}.attn_norm.weight"},
    {"model.layers.{L}.self_attn.q_proj.weight", "blk.{L}.attn_q.weight"},
    {"model.layers.{L}.self_attn.k_proj.weight", "blk.{L}.attn_k.weight"},
    {"model.layers.{L}.self_attn.v_proj.weight", "blk.{L}.attn_v.weight"},
    {"model.layers.{L}.self_attn.o_proj.weight", "blk.{L}.attn_output.weight"},
    {"model.layers.{L}.post_attention_layernorm.weight", "blk.{L}.ffn_norm.weight"},
    {"model.layers.{L}.block_sparse_moe.gate.weight", "blk.{L}.ffn_gate_inp.weight"},
    {"model.layers.{L}.block_sparse_moe.experts.{E}.w1.weight", "blk.{L}.ffn_gate.{E}.weight"},
    {"model.layers.{L}.block_sparse_moe.experts.{E}.w3.weight", "blk.{L}.ffn_up.{E}.weight"},
    {"model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight", "blk.{L}.ffn_down.{E}.weight"},
};

Status parse_hf(const nlohmann::json& config, ModelConfig& out) {
  out.n_experts = config.value("num_local_experts", int64_t{0});
  out.n_experts_used = config.value("num_experts_per_tok", int64_t{0});
  out.expert_ffn = out.dense_ffn;
  out.norm_topk_prob = true;
  return ok_status();
}

// llama.cpp's converter reorders each q/k head's rows from NeoX pairs (i, i + d/2) to
// interleaved pairs (2i, 2i + 1), which its "llama" RoPE rotates.
void to_gguf_layout(const ModelConfig& config, const std::string& name, const Shape& shape,
                    std::vector<float>& values) {
  const bool is_q = name.ends_with("attn_q.weight"), is_k = name.ends_with("attn_k.weight");
  if (!is_q && !is_k) return;
  const int64_t heads = is_q ? config.n_heads : config.n_kv_heads;
  const int64_t head_rows = shape[0] / heads, half = head_rows / 2, cols = shape[1];
  const std::vector<float> source = values;
  for (int64_t head = 0; head < heads; ++head) {
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t pair = 0; pair < 2; ++pair) {
        const float* from = source.data() + (head * head_rows + pair * half + i) * cols;
        std::copy(from, from + cols, values.data() + (head * head_rows + 2 * i + pair) * cols);
      }
    }
  }
}

Status parse_gguf(const GgufFile& file, ModelConfig& out) {
  if (out.n_experts == 0) {
    return Status::errorf("{}: GGUF 'llama' file has no experts (llama.expert_count); dense Llama "
                          "models are not supported", file.path());
  }
  out.rope_style = RopeStyle::Interleaved;
  out.norm_topk_prob = true;
  return ok_status();
}

}  // namespace

extern const Architecture kMixtral = {
    .name = "mixtral",
    .hf_model_type = "mixtral",
    .gguf_arch = "llama",
    .parse_hf = parse_hf,
    .parse_gguf = parse_gguf,
    .hf_names = kHfNames,
    .to_gguf_layout = to_gguf_layout,
};

}  // namespace moenav
