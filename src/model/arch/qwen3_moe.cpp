// Qwen3-MoE: GQA with RMSNorm on each head of q and k (before RoPE), softmax top-k routing whose
// renormalization is a config flag (norm_topk_prob), and optional dense layers
// (mlp_only_layers, decoder_sparse_step).
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
    {"model.layers.{L}.self_attn.q_norm.weight", "blk.{L}.attn_q_norm.weight"},
    {"model.layers.{L}.self_attn.k_norm.weight", "blk.{L}.attn_k_norm.weight"},
    {"model.layers.{L}.post_attention_layernorm.weight", "blk.{L}.ffn_norm.weight"},
    {"model.layers.{L}.mlp.gate.weight", "blk.{L}.ffn_gate_inp.weight"},
    {"model.layers.{L}.mlp.experts.{E}.gate_proj.weight", "blk.{L}.ffn_gate.{E}.weight"},
    {"model.layers.{L}.mlp.experts.{E}.up_proj.weight", "blk.{L}.ffn_up.{E}.weight"},
    {"model.layers.{L}.mlp.experts.{E}.down_proj.weight", "blk.{L}.ffn_down.{E}.weight"},
    {"model.layers.{L}.mlp.gate_proj.weight", "blk.{L}.ffn_gate.weight"},
    {"model.layers.{L}.mlp.up_proj.weight", "blk.{L}.ffn_up.weight"},
    {"model.layers.{L}.mlp.down_proj.weight", "blk.{L}.ffn_down.weight"},
};

Status parse_hf(const nlohmann::json& config, ModelConfig& out) {
  // transformers 5 writes num_local_experts; earlier versions num_experts.
  out.n_experts = config.value("num_local_experts", config.value("num_experts", int64_t{0}));
  out.n_experts_used = config.value("num_experts_per_tok", int64_t{0});
  out.expert_ffn = config.value("moe_intermediate_size", out.dense_ffn);
  out.norm_topk_prob = config.value("norm_topk_prob", false);
  out.qk_norm = true;
  out.attention_bias = config.value("attention_bias", false);
  const int64_t sparse_step = config.value("decoder_sparse_step", int64_t{1});
  std::vector<int64_t> mlp_only = config.value("mlp_only_layers", std::vector<int64_t>{});
  for (int64_t layer = 0; layer < out.n_layers; ++layer) {
    bool dense = std::find(mlp_only.begin(), mlp_only.end(), layer) != mlp_only.end();
    bool sparse = out.n_experts > 0 && sparse_step > 0 && (layer + 1) % sparse_step == 0;
    out.layer_is_moe[static_cast<size_t>(layer)] = sparse && !dense;
  }
  return ok_status();
}

Status parse_gguf(const GgufFile& file, ModelConfig& out) {
  out.qk_norm = true;
  // llama.cpp's qwen3moe graph always renormalizes; our converter records the checkpoint's choice.
  out.norm_topk_prob = file.get_bool("qwen3moe.expert_weights_norm").value_or(true);
  return ok_status();
}

}  // namespace

extern const Architecture kQwen3Moe = {
    .name = "qwen3_moe",
    .hf_model_type = "qwen3_moe",
    .gguf_arch = "qwen3moe",
    .parse_hf = parse_hf,
    .parse_gguf = parse_gguf,
    .hf_names = kHfNames,
};

}  // namespace moenav
