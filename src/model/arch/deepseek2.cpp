// DeepSeek-V2 and -V3: multi-head latent attention (q LoRA optional, kv compressed to a latent,
// interleaved RoPE on a separate head slice), leading dense layers (first_k_dense_replace), shared
// experts, and routed_scaling_factor. V2 scores with a softmax (greedy or group-limited by the
// best expert per group); V3 with a sigmoid plus e_score_correction_bias for selection only,
// group-limited by each group's two best, renormalized. llama.cpp writes both as GGUF
// "deepseek2", with kv_b also split per head into attn_k_b (transposed) and attn_v_b.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

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
    {"model.layers.{L}.self_attn.q_a_proj.weight", "blk.{L}.attn_q_a.weight"},
    {"model.layers.{L}.self_attn.q_a_layernorm.weight", "blk.{L}.attn_q_a_norm.weight"},
    {"model.layers.{L}.self_attn.q_b_proj.weight", "blk.{L}.attn_q_b.weight"},
    {"model.layers.{L}.self_attn.kv_a_proj_with_mqa.weight", "blk.{L}.attn_kv_a_mqa.weight"},
    {"model.layers.{L}.self_attn.kv_a_layernorm.weight", "blk.{L}.attn_kv_a_norm.weight"},
    {"model.layers.{L}.self_attn.kv_b_proj.weight", "blk.{L}.attn_kv_b.weight"},
    {"model.layers.{L}.self_attn.o_proj.weight", "blk.{L}.attn_output.weight"},
    {"model.layers.{L}.post_attention_layernorm.weight", "blk.{L}.ffn_norm.weight"},
    {"model.layers.{L}.mlp.gate.weight", "blk.{L}.ffn_gate_inp.weight"},
    {"model.layers.{L}.mlp.gate.e_score_correction_bias", "blk.{L}.exp_probs_b.bias"},
    {"model.layers.{L}.mlp.experts.{E}.gate_proj.weight", "blk.{L}.ffn_gate.{E}.weight"},
    {"model.layers.{L}.mlp.experts.{E}.up_proj.weight", "blk.{L}.ffn_up.{E}.weight"},
    {"model.layers.{L}.mlp.experts.{E}.down_proj.weight", "blk.{L}.ffn_down.{E}.weight"},
    {"model.layers.{L}.mlp.shared_experts.gate_proj.weight", "blk.{L}.ffn_gate_shexp.weight"},
    {"model.layers.{L}.mlp.shared_experts.up_proj.weight", "blk.{L}.ffn_up_shexp.weight"},
    {"model.layers.{L}.mlp.shared_experts.down_proj.weight", "blk.{L}.ffn_down_shexp.weight"},
    {"model.layers.{L}.mlp.gate_proj.weight", "blk.{L}.ffn_gate.weight"},
    {"model.layers.{L}.mlp.up_proj.weight", "blk.{L}.ffn_up.weight"},
    {"model.layers.{L}.mlp.down_proj.weight", "blk.{L}.ffn_down.weight"},
};

double yarn_mscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// MLA geometry shared by both sources: query/key heads are nope + rope wide, the cache holds the
// latent and one rotary key, and YaRN's mscale_all_dim sharpens the softmax.
void set_mla_geometry(ModelConfig& out) {
  out.attention = AttentionKind::Mla;
  out.head_dim = out.qk_nope_dim + out.qk_rope_dim;
  out.n_kv_heads = out.n_heads;
  out.rope_dim = out.qk_rope_dim;
  out.rope_style = RopeStyle::Interleaved;
  double scale = 1.0 / std::sqrt(static_cast<double>(out.head_dim));
  if (out.rope_scaling == RopeScaling::Yarn && out.yarn_mscale_all_dim > 0.0) {
    const double mscale = yarn_mscale(out.rope_factor, out.yarn_mscale_all_dim);
    scale *= mscale * mscale;
  }
  out.attention_scale = static_cast<float>(scale);
}

Status parse_hf_common(const nlohmann::json& config, ModelConfig& out) {
  if (config.value("attention_bias", false))
    return Status::error("attention_bias is not supported for DeepSeek");
  // Integer fields that may be missing or null.
  auto dim = [&](const char* key) {
    auto it = config.find(key);
    return it != config.end() && it->is_number_integer() ? it->get<int64_t>() : int64_t{0};
  };
  out.q_lora_rank = dim("q_lora_rank");
  out.kv_lora_rank = dim("kv_lora_rank");
  out.qk_nope_dim = dim("qk_nope_head_dim");
  out.qk_rope_dim = dim("qk_rope_head_dim");
  out.v_head_dim = dim("v_head_dim");
  if (out.kv_lora_rank <= 0 || out.qk_rope_dim <= 0 || out.v_head_dim <= 0 || out.qk_rope_dim % 2) {
    return Status::errorf(
        "kv_lora_rank ({}), qk_rope_head_dim ({}, even) and v_head_dim ({}) must be "
        "positive",
        out.kv_lora_rank, out.qk_rope_dim, out.v_head_dim);
  }
  set_mla_geometry(out);
  out.n_experts = dim("n_routed_experts");
  out.n_experts_used = dim("num_experts_per_tok");
  out.expert_ffn = dim("moe_intermediate_size");
  out.n_shared_experts = dim("n_shared_experts");
  out.shared_expert_ffn = out.expert_ffn * out.n_shared_experts;
  out.routed_scaling_factor = config.value("routed_scaling_factor", 1.0f);
  out.n_expert_groups = std::max<int64_t>(1, dim("n_group"));
  out.n_expert_groups_used = std::max<int64_t>(1, dim("topk_group"));
  const int64_t first_dense = dim("first_k_dense_replace");
  const int64_t frequency = std::max<int64_t>(1, config.value("moe_layer_freq", int64_t{1}));
  for (int64_t layer = 0; layer < out.n_layers; ++layer) {
    out.layer_is_moe[static_cast<size_t>(layer)] =
        out.n_experts > 0 && layer >= first_dense && layer % frequency == 0;
  }
  return ok_status();
}

Status parse_hf_v2(const nlohmann::json& config, ModelConfig& out) {
  MOENAV_RETURN_IF_ERROR(parse_hf_common(config, out));
  out.gating = Gating::Softmax;
  out.norm_topk_prob = false;  // transformers' DeepSeek-V2 only scales
  out.group_score = GroupScore::Max;
  if (config.value("topk_method", std::string("greedy")) != "group_limited_greedy") {
    out.n_expert_groups = out.n_expert_groups_used = 1;
  }
  return ok_status();
}

Status parse_hf_v3(const nlohmann::json& config, ModelConfig& out) {
  MOENAV_RETURN_IF_ERROR(parse_hf_common(config, out));
  out.gating = Gating::Sigmoid;
  out.expert_selection_bias = true;
  out.norm_topk_prob = config.value("norm_topk_prob", true);
  out.group_score = GroupScore::TopTwoSum;
  return ok_status();
}

// kv_b [n_heads * (nope + v), rank] -> attn_k_b [n_heads, rank, nope] (transposed key half) and
// attn_v_b [n_heads, v, rank], the layout the latent attention multiplies with.
Status derive_hf_tensors(Model& model) {
  const ModelConfig& c = model.config;
  const int64_t nope = c.qk_nope_dim, v = c.v_head_dim, rank = c.kv_lora_rank;
  for (int64_t layer = 0; layer < c.n_layers; ++layer) {
    MOENAV_ASSIGN_OR_RETURN(const TensorInfo* kv_b,
                            require_tensor(model, fmt::format("blk.{}.attn_kv_b.weight", layer)));
    if (!(kv_b->view.shape == Shape{c.n_heads * (nope + v), rank})) {
      return Status::errorf(
          "{}: tensor '{}' has shape {}, expected [{}, {}] (heads x (qk_nope + v), kv_lora_rank)",
          kv_b->file, kv_b->name, kv_b->view.shape.to_string(), c.n_heads * (nope + v), rank);
    }
    const std::vector<float> source = tensor_to_f32(kv_b->view);
    std::vector<float> k_b(static_cast<size_t>(c.n_heads * rank * nope));
    std::vector<float> v_b(static_cast<size_t>(c.n_heads * v * rank));
    for (int64_t head = 0; head < c.n_heads; ++head) {
      const float* rows = source.data() + head * (nope + v) * rank;
      for (int64_t i = 0; i < nope; ++i)
        for (int64_t j = 0; j < rank; ++j)
          k_b[static_cast<size_t>((head * rank + j) * nope + i)] = rows[i * rank + j];
      std::copy(rows + nope * rank, rows + (nope + v) * rank, v_b.begin() + head * v * rank);
    }
    const DType dtype = kv_b->view.dtype;
    const std::string file = kv_b->file;
    MOENAV_RETURN_IF_ERROR(add_derived_tensor(model, fmt::format("blk.{}.attn_k_b.weight", layer),
                                              dtype, {c.n_heads, rank, nope}, k_b, file));
    MOENAV_RETURN_IF_ERROR(add_derived_tensor(model, fmt::format("blk.{}.attn_v_b.weight", layer),
                                              dtype, {c.n_heads, v, rank}, v_b, file));
  }
  return ok_status();
}

Status parse_gguf(const GgufFile& file, ModelConfig& out) {
  auto get = [&](const char* key, int64_t fallback) {
    return file.get_int(fmt::format("deepseek2.{}", key)).value_or(fallback);
  };
  out.q_lora_rank = get("attention.q_lora_rank", 0);
  out.kv_lora_rank = get("attention.kv_lora_rank", 0);
  out.qk_rope_dim = get("rope.dimension_count", 0);
  // llama.cpp's MLA files give the per-head sizes as *_mla; older ones as key/value_length.
  const int64_t key_length = get("attention.key_length_mla", get("attention.key_length", 0));
  out.v_head_dim = get("attention.value_length_mla", get("attention.value_length", 0));
  out.qk_nope_dim = key_length - out.qk_rope_dim;
  if (out.kv_lora_rank <= 0 || out.qk_rope_dim <= 0 || out.qk_nope_dim <= 0 ||
      out.v_head_dim <= 0) {
    return Status::errorf(
        "{}: incomplete deepseek2 attention metadata (kv_lora_rank={}, rope={}, "
        "key_length={}, value_length={})",
        file.path(), out.kv_lora_rank, out.qk_rope_dim, key_length, out.v_head_dim);
  }
  if (auto log_multiplier = file.get_float("deepseek2.rope.scaling.yarn_log_multiplier")) {
    out.yarn_mscale_all_dim = *log_multiplier / 0.1;
    out.yarn_mscale = out.yarn_mscale_all_dim;
  }
  set_mla_geometry(out);
  out.shared_expert_ffn = out.expert_ffn * out.n_shared_experts;
  const bool sigmoid = get("expert_gating_func", 1) == 2;
  out.gating = sigmoid ? Gating::Sigmoid : Gating::Softmax;
  out.group_score = sigmoid ? GroupScore::TopTwoSum : GroupScore::Max;
  out.expert_selection_bias =
      file.weights().find("blk.0.exp_probs_b.bias") != nullptr ||
      file.weights().find(
          fmt::format("blk.{}.exp_probs_b.bias", get("leading_dense_block_count", 0))) != nullptr;
  out.norm_topk_prob = file.get_bool("deepseek2.expert_weights_norm").value_or(false);
  out.n_expert_groups = std::max<int64_t>(1, get("expert_group_count", 1));
  out.n_expert_groups_used = std::max<int64_t>(1, get("expert_group_used_count", 1));
  if (sigmoid) out.arch = "deepseek_v3";
  return ok_status();
}

void write_gguf(const ModelConfig& c, GgufWriter& writer) {
  auto u32 = [&](const char* key, int64_t value) {
    writer.set_uint32(fmt::format("deepseek2.{}", key), static_cast<uint32_t>(value));
  };
  int64_t leading_dense = 0;
  while (leading_dense < c.n_layers && !c.is_moe_layer(leading_dense)) ++leading_dense;
  u32("leading_dense_block_count", leading_dense);
  u32("expert_shared_count", c.n_shared_experts);
  u32("expert_gating_func", c.gating == Gating::Sigmoid ? 2 : 1);
  u32("expert_group_count", c.n_expert_groups);
  u32("expert_group_used_count", c.n_expert_groups_used);
  if (c.q_lora_rank > 0) u32("attention.q_lora_rank", c.q_lora_rank);
  u32("attention.kv_lora_rank", c.kv_lora_rank);
  // As llama.cpp's converter: MLA is MQA over the latent (one kv head of rank + rope).
  u32("attention.head_count_kv", 1);
  u32("attention.key_length", c.kv_lora_rank + c.qk_rope_dim);
  u32("attention.value_length", c.kv_lora_rank);
  u32("attention.key_length_mla", c.qk_nope_dim + c.qk_rope_dim);
  u32("attention.value_length_mla", c.v_head_dim);
  u32("rope.dimension_count", c.qk_rope_dim);
  if (c.rope_scaling == RopeScaling::Yarn && c.yarn_mscale_all_dim > 0.0) {
    writer.set_float32("deepseek2.rope.scaling.yarn_log_multiplier",
                       static_cast<float>(0.1 * c.yarn_mscale_all_dim));
  }
}

}  // namespace

extern const Architecture kDeepseekV2 = {
    .name = "deepseek_v2",
    .hf_model_type = "deepseek_v2",
    .gguf_arch = "deepseek2",
    .parse_hf = parse_hf_v2,
    .parse_gguf = parse_gguf,
    .hf_names = kHfNames,
    .derive_hf_tensors = derive_hf_tensors,
    .write_gguf = write_gguf,
};

extern const Architecture kDeepseekV3 = {
    .name = "deepseek_v3",
    .hf_model_type = "deepseek_v3",
    .gguf_arch = "deepseek2",
    .parse_hf = parse_hf_v3,
    .parse_gguf = parse_gguf,
    .hf_names = kHfNames,
    .derive_hf_tensors = derive_hf_tensors,
    .write_gguf = write_gguf,
};

}  // namespace moenav
