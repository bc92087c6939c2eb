// gpt-oss: attention with biases everywhere and a learned sink logit per head, alternating
// sliding-window and full layers (layer_types; llama.cpp: even layers slide), YaRN RoPE; a router
// with a bias whose top-k logits are softmaxed; experts with biases and the clamped SwiGLU.
// transformers stores the experts fused and input-major: gate_up_proj [E, hidden, 2 * ffn] with
// gate and up interleaved by column (gate = even, up = odd) and down_proj [E, ffn, hidden]. The
// loader splits and transposes them once into llama.cpp's ffn_{gate,up,down}_exps [E, out, in]
// (Model-owned, source dtype), so the experts run through the common FFN. GGUF "gpt-oss".
#include <fmt/format.h>

#include "io/gguf.h"
#include "model/arch/architecture.h"
#include "model/derived_tensors.h"

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
    {"model.layers.{L}.self_attn.q_proj.bias", "blk.{L}.attn_q.bias"},
    {"model.layers.{L}.self_attn.k_proj.bias", "blk.{L}.attn_k.bias"},
    {"model.layers.{L}.self_attn.v_proj.bias", "blk.{L}.attn_v.bias"},
    {"model.layers.{L}.self_attn.o_proj.bias", "blk.{L}.attn_output.bias"},
    {"model.layers.{L}.self_attn.sinks", "blk.{L}.attn_sinks.weight"},
    {"model.layers.{L}.post_attention_layernorm.weight", "blk.{L}.post_attention_norm.weight"},
    {"model.layers.{L}.mlp.router.weight", "blk.{L}.ffn_gate_inp.weight"},
    {"model.layers.{L}.mlp.router.bias", "blk.{L}.ffn_gate_inp.bias"},
    // Source layouts, replaced at load by derive_hf_tensors.
    {"model.layers.{L}.mlp.experts.gate_up_proj", "blk.{L}.hf_gate_up_proj"},
    {"model.layers.{L}.mlp.experts.gate_up_proj_bias", "blk.{L}.hf_gate_up_proj_bias"},
    {"model.layers.{L}.mlp.experts.down_proj", "blk.{L}.hf_down_proj"},
    {"model.layers.{L}.mlp.experts.down_proj_bias", "blk.{L}.ffn_down_exps.bias"},
};

void set_flags(ModelConfig& out) {
  out.gating = Gating::SoftmaxTopk;
  out.router_bias = true;
  out.expert_bias = true;
  out.expert_activation = FfnActivation::ClampedSwiglu;
  out.attention_bias = true;
  out.attention_output_bias = true;
  out.attention_sinks = true;
}

Status parse_hf(const nlohmann::json& config, ModelConfig& out) {
  set_flags(out);
  out.n_experts = config.value("num_local_experts", int64_t{0});
  out.n_experts_used = config.value("num_experts_per_tok", int64_t{0});
  out.expert_ffn = out.dense_ffn;
  out.swiglu_limit = config.value("swiglu_limit", 7.0f);
  out.sliding_window = config.value("sliding_window", int64_t{0});
  const auto types = config.value("layer_types", std::vector<std::string>{});
  if (!types.empty() && static_cast<int64_t>(types.size()) != out.n_layers) {
    return Status::errorf("layer_types has {} entries; num_hidden_layers is {}", types.size(),
                          out.n_layers);
  }
  out.layer_sliding_window.assign(static_cast<size_t>(out.n_layers), false);
  for (int64_t layer = 0; layer < out.n_layers; ++layer) {
    // transformers' default when layer_types is absent: even layers slide.
    out.layer_sliding_window[static_cast<size_t>(layer)] =
        types.empty() ? layer % 2 == 0 : types[static_cast<size_t>(layer)] == "sliding_attention";
  }
  return ok_status();
}

// Splits one layer's fused experts into ffn_gate_exps / ffn_up_exps [E, ffn, hidden] (+ biases)
// and transposes down_proj into ffn_down_exps [E, hidden, ffn].
Status split_experts(Model& model, int64_t layer) {
  const ModelConfig& c = model.config;
  const int64_t experts = c.n_experts, hidden = c.hidden, ffn = c.expert_ffn;
  auto name = [layer](const char* role) { return fmt::format("blk.{}.{}", layer, role); };
  MOENAV_ASSIGN_OR_RETURN(const TensorInfo* gate_up,
                          require_tensor(model, name("hf_gate_up_proj")));
  MOENAV_ASSIGN_OR_RETURN(const TensorInfo* gate_up_bias,
                          require_tensor(model, name("hf_gate_up_proj_bias")));
  MOENAV_ASSIGN_OR_RETURN(const TensorInfo* down, require_tensor(model, name("hf_down_proj")));
  const std::pair<const TensorInfo*, Shape> expected[] = {{gate_up, {experts, hidden, 2 * ffn}},
                                                          {gate_up_bias, {experts, 2 * ffn}},
                                                          {down, {experts, ffn, hidden}}};
  for (const auto& [info, shape] : expected) {
    if (!(info->view.shape == shape)) {
      return Status::errorf(
          "{}: tensor for '{}' has shape {}, expected {} (experts={}, hidden={}, ffn={})",
          info->file, info->name, info->view.shape.to_string(), shape.to_string(), experts, hidden,
          ffn);
    }
  }
  const std::vector<float> fused = tensor_to_f32(gate_up->view),
                           fused_bias = tensor_to_f32(gate_up_bias->view);
  const std::vector<float> down_in = tensor_to_f32(down->view);
  std::vector<float> gate(fused.size() / 2), up(fused.size() / 2), down_out(down_in.size());
  std::vector<float> gate_bias(fused_bias.size() / 2), up_bias(fused_bias.size() / 2);
  for (int64_t e = 0; e < experts; ++e) {
    for (int64_t f = 0; f < ffn; ++f) {
      for (int64_t h = 0; h < hidden; ++h) {
        const float* column = fused.data() + (e * hidden + h) * 2 * ffn;
        gate[static_cast<size_t>((e * ffn + f) * hidden + h)] = column[2 * f];
        up[static_cast<size_t>((e * ffn + f) * hidden + h)] = column[2 * f + 1];
        down_out[static_cast<size_t>((e * hidden + h) * ffn + f)] =
            down_in[static_cast<size_t>((e * ffn + f) * hidden + h)];
      }
      gate_bias[static_cast<size_t>(e * ffn + f)] =
          fused_bias[static_cast<size_t>(e * 2 * ffn + 2 * f)];
      up_bias[static_cast<size_t>(e * ffn + f)] =
          fused_bias[static_cast<size_t>(e * 2 * ffn + 2 * f + 1)];
    }
  }
  const DType dtype = gate_up->view.dtype;
  const std::string file = gate_up->file;
  for (const char* consumed : {"hf_gate_up_proj", "hf_gate_up_proj_bias", "hf_down_proj"})
    model.tensors.remove(name(consumed));
  MOENAV_RETURN_IF_ERROR(add_derived_tensor(model, name("ffn_gate_exps.weight"), dtype,
                                            {experts, ffn, hidden}, gate, file));
  MOENAV_RETURN_IF_ERROR(add_derived_tensor(model, name("ffn_up_exps.weight"), dtype,
                                            {experts, ffn, hidden}, up, file));
  MOENAV_RETURN_IF_ERROR(add_derived_tensor(model, name("ffn_down_exps.weight"), dtype,
                                            {experts, hidden, ffn}, down_out, file));
  MOENAV_RETURN_IF_ERROR(add_derived_tensor(model, name("ffn_gate_exps.bias"), dtype,
                                            {experts, ffn}, gate_bias, file));
  return add_derived_tensor(model, name("ffn_up_exps.bias"), dtype, {experts, ffn}, up_bias, file);
}

Status derive_hf_tensors(Model& model) {
  for (int64_t layer = 0; layer < model.config.n_layers; ++layer) {
    MOENAV_RETURN_IF_ERROR(split_experts(model, layer));
  }
  return ok_status();
}

Status parse_gguf(const GgufFile&, ModelConfig& out) {
  set_flags(out);
  // gpt-oss's YaRN keeps the fractional correction range (rope_scaling.truncate = false), which
  // GGUF has no key for.
  out.yarn_truncate = false;
  // llama.cpp's gpt-oss graph: sliding-window attention on even layers.
  out.layer_sliding_window.assign(static_cast<size_t>(out.n_layers), false);
  for (int64_t layer = 0; layer < out.n_layers; layer += 2)
    out.layer_sliding_window[static_cast<size_t>(layer)] = true;
  return ok_status();
}

}  // namespace

extern const Architecture kGptOss = {
    .name = "gpt_oss",
    .hf_model_type = "gpt_oss",
    .gguf_arch = "gpt-oss",
    .parse_hf = parse_hf,
    .parse_gguf = parse_gguf,
    .hf_names = kHfNames,
    .derive_hf_tensors = derive_hf_tensors,
};

}  // namespace moenav
