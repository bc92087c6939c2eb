// Weight types chosen per tensor, and the conversion that applies them. Two users share it: the
// engine converts a loaded model's matrices at load (EngineConfig weights.type / weights.rules),
// and `moenav quantize` writes a GGUF file with the same choices, so a model quantized to a file
// and the same model converted at load run on the same bytes.
//
// Choosing: rules are tried in order and the first whose pattern matches the tensor's canonical
// name decides; otherwise weights.type with a default mix (routers f32, output q6_k under 2..5-bit
// types, as llama.cpp does); with neither, a tensor keeps its type. Vectors (norms, biases) are
// always f32. Per-expert tensors are matched by their stacked GGUF name whatever the file holds
// ("blk.3.ffn_gate.5.weight" -> "blk.3.ffn_gate_exps.weight"), so "*exps*" means the same on a
// Hugging Face directory and on a GGUF file. A matrix whose rows do not fill whole blocks of the
// type takes the nearest type that fits (q4_k -> q4_0, q6_k -> q8_0, q8_0 -> f16/bf16).
//
// Converting at load replaces the views in ModelWeights and the WeightIndex entries by buffers
// the Model owns; rows are dequantized from the mapping one at a time, so no unconverted copy is
// made beyond the mapping itself.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "model/model.h"
#include "moenav/engine_config.h"

namespace moenav {

struct WeightTypeRule {
  std::string pattern;  // glob ("blk.*.attn_*"), alias ("router") or substring ("exps")
  DType type = DType::F32;
};

// What one tensor becomes. `note` says why a fallback was taken ("" when none was).
struct WeightTypeChoice {
  DType type = DType::F32;
  std::string note;
};

// Every matrix view the forward pass reads (vectors are f32 copies and never change type).
std::vector<TensorView*> matrix_views(ModelWeights& weights);
// True when `view` (an expert of a stacked tensor, or the whole) lies inside `tensor`.
bool view_inside(const TensorView& view, const TensorView& tensor);

class WeightTypePlan {
 public:
  // From weights.type ("" keeps each tensor's type) and weights.rules; names the bad entry.
  static Expected<WeightTypePlan> create(const WeightsConfig& config);
  // From `--rule PATTERN=TYPE` strings (the quantize command).
  static Expected<WeightTypePlan> create(std::string_view type, const std::vector<std::string>& rules);

  // True when no tensor can change.
  bool keeps_all() const { return !default_type_ && rules_.empty(); }

  // The type of tensor `name` (canonical, experts by their stacked name), of shape `shape`
  // (outer-first) and current type `current`.
  WeightTypeChoice choose(std::string_view name, const Shape& shape, DType current) const;

  // The dominant type (GGUF general.file_type), F32 when none was given.
  DType default_type() const { return default_type_.value_or(DType::F32); }

 private:
  std::optional<DType> default_type_;
  std::vector<WeightTypeRule> rules_;
};

// Whether `pattern` (glob, alias or substring) matches the canonical name.
bool weight_pattern_matches(std::string_view pattern, std::string_view name);

// "blk.3.ffn_gate.5.weight" -> "blk.3.ffn_gate_exps.weight"; other names unchanged.
std::string stacked_expert_name(std::string_view name);

// Weight types a matrix can hold (the matmul kernels' dtypes); errors name the offending text.
Expected<DType> parse_weight_type(std::string_view text);

// `values` (shape.elements() floats, rows of shape's last dimension) encoded as `type`.
std::vector<uint8_t> encode_rows(DType type, const float* values, const Shape& shape);

// Converts the loaded model's matrices as `config` asks (nothing when it asks nothing). Fallback
// notes go to stderr, one line per distinct note.
Status convert_weights(Model& model, const WeightsConfig& config);

}  // namespace moenav
