// A loaded model: its configuration, its canonical tensor index and the weights bound to roles.
// Loading validates every tensor's presence, dtype and shape against the configuration and
// says which file, which tensor, what was expected and what was found.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/host_buffer.h"
#include "io/gguf.h"
#include "io/weight_index.h"
#include "model/arch/architecture.h"
#include "model/model_config.h"
#include "model/model_weights.h"

namespace moenav {

struct Model {
  std::string path;    // the directory or .gguf file it was loaded from
  std::string format;  // "safetensors" or "gguf"
  const Architecture* arch = nullptr;
  ModelConfig config;
  WeightIndex tensors;  // canonical names; keeps the file mappings alive
  ModelWeights weights;
  std::shared_ptr<GgufFile> gguf;  // metadata (tokenizer, chat template) when loaded from GGUF
  std::vector<std::vector<float>> owned_f32;  // small vectors converted to f32 at load
  // Tensors built at load: from a checkpoint's own layout (model/derived_tensors.h), converted
  // to another type (weight_conversion.h) or copied out of the mapping (host_weights.h).
  std::vector<HostBuffer> owned_tensors;

  int64_t total_bytes() const;   // all tensor bytes
  int64_t expert_bytes() const;  // routed experts' bytes
};

// MODEL is a Hugging Face directory (config.json + *.safetensors) or a .gguf file.
Expected<std::unique_ptr<Model>> load_model(const std::string& path);

}  // namespace moenav
