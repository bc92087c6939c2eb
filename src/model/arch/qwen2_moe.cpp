// Qwen2-MoE: Qwen2 attention (q/k/v biases), softmax top-k routing without renormalization by
// default (norm_topk_prob), and a shared expert on every token scaled by
// sigmoid(shared_expert_gate . x). llama.cpp writes it as GGUF "qwen2moe".
#include <fmt/format.h>

#include <algorithm>

#include "io/gguf.h"
#include "model/arch/architecture.h"
#include "model/model.h"

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
    {"model.layers.{L}.self_attn.q_proj.bias", "blk.{L}.attn_q.bias"},
    {"model.layers.{L}.self_attn.k_proj.bias", "blk.{L}.attn_k.bias"},
    {"model.layers.{L}.self_attn.v_proj.bias", "blk.{L}.attn_v.bias"},
    {"model.layers.{L}.self_attn.o_proj.weight", "blk.{L}.attn_output.weight"},
    {"model.layers.{L}.post_attention_layernorm.weight", "blk.{L}.ffn_norm.weight"},
    {"model.layers.{L}.mlp.gate.weight", "blk.{L}.ffn_gate_inp.weight"},
    {"model.layers.{L}.mlp.experts.{E}.gate_proj.weight", "blk.{L}.ffn_gate.{E}.weight"},
    {"model.layers.{L}.mlp.experts.{E}.up_proj.weight", "blk.{L}.ffn_up.{E}.weight"},
    {"model.layers.{L}.mlp.experts.{E}.down_proj.weight", "blk.{L}.ffn_down.{E}.weight"},
    {"model.layers.{L}.mlp.shared_expert.gate_proj.weight", "blk.{L}.ffn_gate_shexp.weight"},
    {"model.layers.{L}.mlp.shared_expert.up_proj.weight", "blk.{L}.ffn_up_shexp.weight"},
    {"model.layers.{L}.mlp.shared_expert.down_proj.weight", "blk.{L}.ffn_down_shexp.weight"},
    {"model.layers.{L}.mlp.shared_expert_gate.weight", "blk.{L}.ffn_gate_inp_shexp.weight"},
    {"model.layers.{L}.mlp.gate_proj.weight", "blk.{L}.ffn_gate.weight"},
    {"model.layers.{L}.mlp.up_proj.weight", "blk.{L}.ffn_up.weight"},
    {"model.layers.{L}.mlp.down_proj.weight", "blk.{L}.ffn_down.weight"},
};

Status parse_hf(const nlohmann::json& config, ModelConfig& out) {
  out.n_experts = config.value("num_experts", config.value("num_local_experts", int64_t{0}));
  out.n_experts_used = config.value("num_experts_per_tok", int64_t{0});
  out.expert_ffn = config.value("moe_intermediate_size", out.dense_ffn);
  out.norm_topk_prob = config.value("norm_topk_prob", false);
  out.attention_bias = config.value("qkv_bias", true);
  out.shared_expert_ffn = config.value("shared_expert_intermediate_size", int64_t{0});
  out.n_shared_experts = out.shared_expert_ffn > 0 ? 1 : 0;
  out.shared_expert_gate = out.n_shared_experts > 0;
  if (config.value("use_sliding_window", false)) {
    return Status::error("use_sliding_window = true is not supported for qwen2_moe");
  }
  const int64_t sparse_step = config.value("decoder_sparse_step", int64_t{1});
  const auto mlp_only = config.value("mlp_only_layers", std::vector<int64_t>{});
  for (int64_t layer = 0; layer < out.n_layers; ++layer) {
    const bool dense = std::find(mlp_only.begin(), mlp_only.end(), layer) != mlp_only.end();
    const bool sparse = out.n_experts > 0 && sparse_step > 0 && (layer + 1) % sparse_step == 0;
    out.layer_is_moe[static_cast<size_t>(layer)] = sparse && !dense;
  }
  return ok_status();
}

// The shared expert's gate is a [1, hidden] linear in transformers and a [hidden] vector in GGUF.
Status derive_hf_tensors(Model& model) {
  for (int64_t layer = 0; layer < model.config.n_layers; ++layer) {
    const std::string name = fmt::format("blk.{}.ffn_gate_inp_shexp.weight", layer);
    const TensorInfo* info = model.tensors.find(name);
    if (info == nullptr || info->view.shape.rank != 2 || info->view.shape[0] != 1) continue;
    TensorInfo vector = *info;
    vector.view.shape = Shape{info->view.shape[1]};
    model.tensors.remove(name);
    MOENAV_RETURN_IF_ERROR(model.tensors.add_tensor(std::move(vector)));
  }
  return ok_status();
}

Status parse_gguf(const GgufFile& file, ModelConfig& out) {
  out.attention_bias = true;
  out.norm_topk_prob = file.get_bool("qwen2moe.expert_weights_norm").value_or(false);
  out.shared_expert_ffn = file.get_int("qwen2moe.expert_shared_feed_forward_length").value_or(0);
  out.n_shared_experts = out.shared_expert_ffn > 0 ? 1 : 0;
  out.shared_expert_gate = out.n_shared_experts > 0;
  return ok_status();
}

void write_gguf(const ModelConfig& config, GgufWriter& writer) {
  writer.set_uint32("qwen2moe.expert_shared_feed_forward_length",
                    static_cast<uint32_t>(config.shared_expert_ffn));
  writer.set_uint32("qwen2moe.expert_shared_count", static_cast<uint32_t>(config.n_shared_experts));
}

}  // namespace

extern const Architecture kQwen2Moe = {
    .name = "qwen2_moe",
    .hf_model_type = "qwen2_moe",
    .gguf_arch = "qwen2moe",
    .parse_hf = parse_hf,
    .parse_gguf = parse_gguf,
    .hf_names = kHfNames,
    .derive_hf_tensors = derive_hf_tensors,
    .write_gguf = write_gguf,
};

}  // namespace moenav
