// Writes a loaded model as a GGUF file the way llama.cpp's converter does: general.architecture
// and the hyper-parameter keys of the model's GGUF architecture, llama.cpp's tensor names
// (per-expert tensors stacked into ffn_*_exps), the layouts its graphs expect (Mixtral's q/k rows
// permuted for interleaved RoPE), and the tokenizer (tokenizer.ggml.*) when the model directory
// has a byte-level BPE tokenizer.json. Norms, biases, routers and other vectors stay f32;
// matrices take the requested type (rows that do not fill whole blocks fall back to f16).
// `moenav quantize` writes through the same code with a type per tensor (WeightTypePlan, shared
// with the conversion at load in model/weight_conversion.h), from a Hugging Face directory or a
// GGUF file (whose metadata and layouts are kept).
#pragma once

#include <string>

#include "model/model.h"
#include "model/weight_conversion.h"

namespace moenav {

// type: F32, F16, BF16 or Q8_0.
Status export_gguf(const Model& model, const std::string& path, DType type);

// Each tensor's type from `plan` (given its stacked GGUF name and its type in the source).
Status export_gguf(const Model& model, const std::string& path, const WeightTypePlan& plan);

}  // namespace moenav
