// Tensors the loader builds from a Hugging Face layout that llama.cpp's canonical names do not
// share: gpt-oss's fused, input-major gate_up_proj split and transposed; DeepSeek's kv_b split
// per head with its key half transposed. The bytes are owned by the Model and entered in its
// WeightIndex under canonical names, so binding, `inspect` and `convert` see them like any other
// tensor. They keep the source dtype (f32/f16/bf16), so nothing is rounded.
#pragma once

#include <string>
#include <vector>

#include "model/model.h"

namespace moenav {

// The whole tensor in f32 (any dequantizable dtype).
std::vector<float> tensor_to_f32(const TensorView& view);

// Stores `values` (shape.elements() floats) as `dtype` and registers `name`.
Status add_derived_tensor(Model& model, const std::string& name, DType dtype, const Shape& shape,
                          const std::vector<float>& values, const std::string& source_file);

// The checkpoint's tensor `name`, or an error naming the architecture that needs it.
Expected<const TensorInfo*> require_tensor(const Model& model, const std::string& name);

}  // namespace moenav
