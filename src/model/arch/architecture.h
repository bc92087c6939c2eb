// What an architecture declares: how to read its hyper-parameters (Hugging Face config.json or
// GGUF metadata) into ModelConfig, and how its checkpoint names map to canonical names. The
// common fields are parsed once (hf_config.cpp, gguf_config.cpp); an architecture's hooks only
// read what differs. Adding an architecture = one file here + one line in registry.cpp.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "model/model_config.h"
#include "moenav/status.h"

namespace moenav {

class GgufFile;
class GgufWriter;
struct Model;

// A name pattern pair; "{L}" stands for a layer index and "{E}" for an expert index.
// Canonical names are llama.cpp's GGUF names ("blk.{L}.attn_q.weight"), with per-expert tensors
// written "blk.{L}.ffn_gate.{E}.weight" and stacked ones "blk.{L}.ffn_gate_exps.weight".
struct NameRule {
  std::string_view source;
  std::string_view canonical;
};

struct Architecture {
  std::string_view name;           // our name, used in errors and `inspect`
  std::string_view hf_model_type;  // config.json "model_type"
  std::string_view gguf_arch;      // GGUF general.architecture as llama.cpp writes it
  // Arch-specific parts of config.json, after the common fields are filled.
  Status (*parse_hf)(const nlohmann::json& config, ModelConfig& out) = nullptr;
  // Arch-specific parts of GGUF metadata (keys prefixed with gguf_arch), after the common ones.
  Status (*parse_gguf)(const GgufFile& file, ModelConfig& out) = nullptr;
  std::span<const NameRule> hf_names;
  // Builds canonical tensors a Hugging Face layout does not hold as such (a fused gate_up split,
  // kv_b split per head), after renaming; owned by the Model (model/derived_tensors.h).
  Status (*derive_hf_tensors)(Model& model) = nullptr;
  // Arch-specific GGUF metadata for `convert`, the inverse of parse_gguf.
  void (*write_gguf)(const ModelConfig& config, GgufWriter& writer) = nullptr;
  // Rewrites one tensor (f32, outer-first shape) into the layout llama.cpp expects of this GGUF
  // architecture; Mixtral ("llama") permutes q/k rows for interleaved RoPE.
  void (*to_gguf_layout)(const ModelConfig& config, const std::string& name, const Shape& shape,
                         std::vector<float>& values) = nullptr;
};

const std::vector<const Architecture*>& architectures();
const Architecture* find_architecture_by_hf_type(std::string_view model_type);
// GGUF "llama" files hold Llama and Mixtral alike; Mixtral is "llama" with experts.
const Architecture* find_architecture_by_gguf(std::string_view gguf_arch);
std::string supported_architectures();  // "mixtral (HF mixtral, GGUF llama), ..."

// Translates a source name through the rules; nullopt when no rule matches.
std::optional<std::string> translate_name(std::string_view name, std::span<const NameRule> rules);

// Common parsing shared by every architecture.
Status parse_common_hf_config(const nlohmann::json& config, ModelConfig& out);
Status parse_common_gguf_config(const GgufFile& file, std::string_view gguf_arch,
                                ModelConfig& out);
// RoPE scaling from config.json's rope_parameters / rope_scaling (default or yarn).
Status parse_rope_scaling(const nlohmann::json& rope, ModelConfig& out);
// The keys every architecture shares, as llama.cpp's converter writes them.
void write_common_gguf_config(const ModelConfig& config, std::string_view gguf_arch,
                              GgufWriter& writer);

}  // namespace moenav
