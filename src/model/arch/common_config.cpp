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
  // transformers 5 nests rope settings in rope_parameters; older configs have rope_theta.
  if (auto rope = config.find("rope_parameters"); rope != config.end() && rope->is_object()) {
    if (auto theta = rope->find("rope_theta"); theta != rope->end() && theta->is_number()) {
      out.rope_theta = theta->get<double>();
    }
    if (auto type = rope->find("rope_type"); type != rope->end() && type->is_string() &&
                                                *type != "default") {
      return Status::errorf("config.json: rope_type '{}' is not supported (only 'default')",
                            type->get<std::string>());
    }
  } else if (auto theta = config.find("rope_theta"); theta != config.end() && theta->is_number()) {
    out.rope_theta = theta->get<double>();
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
  out.layer_is_moe.assign(static_cast<size_t>(out.n_layers), out.n_experts > 0);
  return ok_status();
}

}  // namespace moenav
