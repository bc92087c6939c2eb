// Hyper-parameters every architecture shares, read once from config.json or GGUF metadata.
#include <fmt/format.h>

#include "io/gguf.h"
#include "model/arch/architecture.h"

namespace moenav {
namespace {

using nlohmann::json;

// Reads an integer field; `required` fields that are missing or mistyped are an error.
Status read_int(const json& config, const char* key, int64_t& out, bool required) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) {
    return required ? Status::errorf("config.json: missing required field '{}'", key) : ok_status();
  }
  if (!it->is_number_integer()) {
    return Status::errorf("config.json: field '{}' must be an integer, found {}", key, it->dump());
  }
  out = it->get<int64_t>();
  if (out < 0) return Status::errorf("config.json: field '{}' must not be negative ({})", key, out);
  return ok_status();
}

std::optional<int32_t> token_id(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_number_integer()) return it->get<int32_t>();
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) return (*it)[0].get<int32_t>();
  return std::nullopt;
}

}  // namespace

Status parse_common_hf_config(const json& config, ModelConfig& out) {
  MOENAV_RETURN_IF_ERROR(read_int(config, "hidden_size", out.hidden, true));
  MOENAV_RETURN_IF_ERROR(read_int(config, "num_hidden_layers", out.n_layers, true));
  MOENAV_RETURN_IF_ERROR(read_int(config, "num_attention_heads", out.n_heads, true));
  MOENAV_RETURN_IF_ERROR(read_int(config, "vocab_size", out.vocab, true));
  out.n_kv_heads = out.n_heads;
  MOENAV_RETURN_IF_ERROR(read_int(config, "num_key_value_heads", out.n_kv_heads, false));
  if (out.n_heads == 0 || out.n_kv_heads == 0 || out.n_heads % out.n_kv_heads != 0) {
    return Status::errorf(
        "config.json: num_attention_heads ({}) must be a positive multiple of num_key_value_heads ({})",
        out.n_heads, out.n_kv_heads);
  }
  out.head_dim = out.hidden / out.n_heads;
  MOENAV_RETURN_IF_ERROR(read_int(config, "head_dim", out.head_dim, false));
  MOENAV_RETURN_IF_ERROR(read_int(config, "max_position_embeddings", out.context_length, false));
  MOENAV_RETURN_IF_ERROR(read_int(config, "intermediate_size", out.dense_ffn, false));
  if (auto eps = config.find("rms_norm_eps"); eps != config.end() && eps->is_number()) {
    out.norm_eps = eps->get<float>();
  }
  // transformers 5 nests rope settings in rope_parameters; older configs have rope_theta and
  // rope_scaling.
  if (auto theta = config.find("rope_theta"); theta != config.end() && theta->is_number()) {
    out.rope_theta = theta->get<double>();
  }
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    if (auto rope = config.find(key); rope != config.end() && rope->is_object()) {
      MOENAV_RETURN_IF_ERROR(parse_rope_scaling(*rope, out));
    }
  }
  const std::string dtype = config.contains("dtype") ? config.value("dtype", std::string())
                                                     : config.value("torch_dtype", std::string());
  if (dtype == "bfloat16") out.rope_frequency_dtype = DType::BF16;
  if (dtype == "float16") out.rope_frequency_dtype = DType::F16;
  out.tie_embeddings = config.value("tie_word_embeddings", false);
  out.bos_token = token_id(config, "bos_token_id");
  out.eos_token = token_id(config, "eos_token_id");
  out.layer_is_moe.assign(static_cast<size_t>(out.n_layers), true);
  return ok_status();
}

Status parse_rope_scaling(const json& rope, ModelConfig& out) {
  if (auto theta = rope.find("rope_theta"); theta != rope.end() && theta->is_number()) {
    out.rope_theta = theta->get<double>();
  }
  std::string type = rope.value("rope_type", rope.value("type", std::string("default")));
  if (type == "default") return ok_status();
  if (type != "yarn") {
    return Status::errorf(
        "config.json: rope_type '{}' is not supported (only 'default' and 'yarn')", type);
  }
  auto number = [&](const char* key, double fallback) {
    auto it = rope.find(key);
    return it != rope.end() && it->is_number() ? it->get<double>() : fallback;
  };
  out.rope_scaling = RopeScaling::Yarn;
  out.rope_factor = number("factor", 1.0);
  out.rope_original_context = static_cast<int64_t>(
      number("original_max_position_embeddings", static_cast<double>(out.context_length)));
  out.yarn_beta_fast = number("beta_fast", 32.0);
  out.yarn_beta_slow = number("beta_slow", 1.0);
  out.yarn_mscale = number("mscale", 0.0);
  out.yarn_mscale_all_dim = number("mscale_all_dim", 0.0);
  out.yarn_attention_factor = number("attention_factor", 0.0);
  out.yarn_truncate = rope.value("truncate", true);
  return ok_status();
}

Status parse_common_gguf_config(const GgufFile& file, std::string_view gguf_arch, ModelConfig& out) {
  const std::string prefix = std::string(gguf_arch) + ".";
  auto require = [&](const std::string& key, int64_t& value) -> Status {
    auto found = file.get_int(prefix + key);
    if (!found) return Status::errorf("{}: missing metadata key '{}{}'", file.path(), prefix, key);
    value = *found;
    return ok_status();
  };
  MOENAV_RETURN_IF_ERROR(require("block_count", out.n_layers));
  MOENAV_RETURN_IF_ERROR(require("embedding_length", out.hidden));
  MOENAV_RETURN_IF_ERROR(require("attention.head_count", out.n_heads));
  out.n_kv_heads = file.get_int(prefix + "attention.head_count_kv").value_or(out.n_heads);
  if (out.n_heads <= 0 || out.n_kv_heads <= 0 || out.n_heads % out.n_kv_heads != 0) {
    return Status::errorf("{}: head_count ({}) must be a positive multiple of head_count_kv ({})",
                          file.path(), out.n_heads, out.n_kv_heads);
  }
  out.head_dim = file.get_int(prefix + "attention.key_length").value_or(out.hidden / out.n_heads);
  out.context_length = file.get_int(prefix + "context_length").value_or(2048);
  out.dense_ffn = file.get_int(prefix + "feed_forward_length").value_or(0);
  out.n_experts = file.get_int(prefix + "expert_count").value_or(0);
  out.n_experts_used = file.get_int(prefix + "expert_used_count").value_or(0);
  out.expert_ffn = file.get_int(prefix + "expert_feed_forward_length").value_or(out.dense_ffn);
  out.norm_eps = static_cast<float>(
      file.get_float(prefix + "attention.layer_norm_rms_epsilon").value_or(1e-5));
  out.rope_theta = file.get_float(prefix + "rope.freq_base").value_or(10000.0);
  if (auto tokens = file.get_string_array("tokenizer.ggml.tokens")) {
    out.vocab = static_cast<int64_t>(tokens->size());
  }
  out.vocab = file.get_int(prefix + "vocab_size").value_or(out.vocab);
  if (auto bos = file.get_int("tokenizer.ggml.bos_token_id")) out.bos_token = static_cast<int32_t>(*bos);
  if (auto eos = file.get_int("tokenizer.ggml.eos_token_id")) out.eos_token = static_cast<int32_t>(*eos);
  // A layer is MoE when it has a router (dense leading layers, mlp_only layers).
  out.layer_is_moe.assign(static_cast<size_t>(out.n_layers), false);
  for (int64_t layer = 0; layer < out.n_layers && out.n_experts > 0; ++layer) {
    out.layer_is_moe[static_cast<size_t>(layer)] =
        file.weights().find(fmt::format("blk.{}.ffn_gate_inp.weight", layer)) != nullptr;
  }
  if (auto rope_dim = file.get_int(prefix + "rope.dimension_count");
      rope_dim && *rope_dim != out.head_dim) {
    out.rope_dim = *rope_dim;
  }
  if (file.get_string(prefix + "rope.scaling.type").value_or("") == "yarn") {
    out.rope_scaling = RopeScaling::Yarn;
    out.rope_factor = file.get_float(prefix + "rope.scaling.factor").value_or(1.0);
    out.rope_original_context =
        file.get_int(prefix + "rope.scaling.original_context_length").value_or(0);
    out.yarn_beta_fast = file.get_float(prefix + "rope.scaling.yarn_beta_fast").value_or(32.0);
    out.yarn_beta_slow = file.get_float(prefix + "rope.scaling.yarn_beta_slow").value_or(1.0);
    out.yarn_attention_factor = file.get_float(prefix + "rope.scaling.attn_factor").value_or(0.0);
  }
  out.routed_scaling_factor =
      static_cast<float>(file.get_float(prefix + "expert_weights_scale").value_or(1.0));
  if (auto norm = file.get_bool(prefix + "expert_weights_norm")) out.norm_topk_prob = *norm;
  out.n_shared_experts = file.get_int(prefix + "expert_shared_count").value_or(0);
  out.sliding_window = file.get_int(prefix + "attention.sliding_window").value_or(0);
  return ok_status();
}

void write_common_gguf_config(const ModelConfig& c, std::string_view gguf_arch,
                              GgufWriter& writer) {
  const std::string prefix = std::string(gguf_arch) + ".";
  auto u32 = [&](const std::string& key, int64_t value) {
    writer.set_uint32(prefix + key, static_cast<uint32_t>(value));
  };
  writer.set_string("general.architecture", std::string(gguf_arch));
  u32("block_count", c.n_layers);
  u32("context_length", c.context_length);
  u32("embedding_length", c.hidden);
  u32("feed_forward_length", c.dense_ffn > 0 ? c.dense_ffn : c.expert_ffn);
  u32("attention.head_count", c.n_heads);
  u32("attention.head_count_kv", c.n_kv_heads);
  u32("attention.key_length", c.head_dim);
  u32("attention.value_length", c.head_dim);
  u32("vocab_size", c.vocab);
  writer.set_float32(prefix + "rope.freq_base", static_cast<float>(c.rope_theta));
  writer.set_float32(prefix + "attention.layer_norm_rms_epsilon", c.norm_eps);
  if (c.rope_dim > 0) u32("rope.dimension_count", c.rope_dim);
  if (c.rope_scaling == RopeScaling::Yarn) {
    writer.set_string(prefix + "rope.scaling.type", "yarn");
    writer.set_float32(prefix + "rope.scaling.factor", static_cast<float>(c.rope_factor));
    u32("rope.scaling.original_context_length", c.rope_original_context);
    writer.set_float32(prefix + "rope.scaling.yarn_beta_fast",
                       static_cast<float>(c.yarn_beta_fast));
    writer.set_float32(prefix + "rope.scaling.yarn_beta_slow",
                       static_cast<float>(c.yarn_beta_slow));
    if (c.yarn_attention_factor > 0.0) {
      writer.set_float32(prefix + "rope.scaling.attn_factor",
                         static_cast<float>(c.yarn_attention_factor));
    }
  }
  if (c.n_experts > 0) {
    u32("expert_count", c.n_experts);
    u32("expert_used_count", c.n_experts_used);
    u32("expert_feed_forward_length", c.expert_ffn);
    writer.set_bool(prefix + "expert_weights_norm", c.norm_topk_prob);
    writer.set_float32(prefix + "expert_weights_scale", c.routed_scaling_factor);
  }
  if (c.sliding_window > 0) u32("attention.sliding_window", c.sliding_window);
  if (c.bos_token)
    writer.set_uint32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(*c.bos_token));
  if (c.eos_token)
    writer.set_uint32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(*c.eos_token));
}

}  // namespace moenav
