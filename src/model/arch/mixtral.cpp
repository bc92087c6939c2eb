// Mixtral: Llama attention (GQA, RoPE) with a softmax top-k MoE in every layer; the selected
// experts' weights are renormalized. llama.cpp writes it as GGUF "llama" with expert tensors and
// permutes q/k rows for interleaved RoPE.
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
};

}  // namespace moenav
