// Reader for Hugging Face safetensors: one file, or a sharded set described by
// model.safetensors.index.json. Tensors are memory-mapped; every header field is validated
// (JSON shape, dtype, offsets inside the file, byte count = elements x dtype size, no overlap).
#pragma once

#include <string>

#include "io/weight_index.h"

namespace moenav {

// Adds every tensor of one .safetensors file to `index`.
Status read_safetensors_file(const std::string& path, WeightIndex& index);

// A model directory: model.safetensors, or the shards named by model.safetensors.index.json,
// or (as a fallback) every *.safetensors in the directory.
Expected<WeightIndex> read_safetensors_dir(const std::string& directory);

// Writes float32 / int tensors to a new .safetensors file (used by `moenav logits`).
struct SafetensorsOutput {
  std::string name;
  DType dtype;  // F32, I32 or I64
  Shape shape;
  const void* data;
};
Status write_safetensors(const std::string& path, const std::vector<SafetensorsOutput>& tensors);

}  // namespace moenav
