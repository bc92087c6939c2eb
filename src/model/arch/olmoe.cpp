// OLMoE: Llama-style attention whose q and k are RMS-normalized over the whole projection width
// (not per head) before RoPE, and softmax top-k routing without renormalization (norm_topk_prob).
// llama.cpp writes it as GGUF "olmoe".
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
};

Status parse_hf(const nlohmann::json& config, ModelConfig& out) {
  out.n_experts = config.value("num_experts", config.value("num_local_experts", int64_t{0}));
  out.n_experts_used = config.value("num_experts_per_tok", int64_t{0});
  out.expert_ffn = out.dense_ffn;
  out.norm_topk_prob = config.value("norm_topk_prob", false);
  out.qk_norm = true;
  out.qk_norm_full_width = true;
  if (auto clip = config.find("clip_qkv"); clip != config.end() && !clip->is_null()) {
    return Status::error("clip_qkv is not supported for olmoe");
  }
  return ok_status();
}

Status parse_gguf(const GgufFile& file, ModelConfig& out) {
  out.qk_norm = true;
  out.qk_norm_full_width = true;
  out.norm_topk_prob = file.get_bool("olmoe.expert_weights_norm").value_or(false);
  return ok_status();
}

}  // namespace

extern const Architecture kOlmoe = {
    .name = "olmoe",
    .hf_model_type = "olmoe",
    .gguf_arch = "olmoe",
    .parse_hf = parse_hf,
    .parse_gguf = parse_gguf,
    .hf_names = kHfNames,
};

}  // namespace moenav
