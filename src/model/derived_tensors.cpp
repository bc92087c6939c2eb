#include "model/derived_tensors.h"

#include "quant/quant.h"

namespace moenav {

std::vector<float> tensor_to_f32(const TensorView& view) {
  std::vector<float> values(static_cast<size_t>(view.shape.elements()));
  for (int64_t row = 0; row < view.rows(); ++row) {
    quant::dequantize_row(view.dtype, view.row(row), values.data() + row * view.cols(),
                          view.cols());
  }
  return values;
}

Status add_derived_tensor(Model& model, const std::string& name, DType dtype, const Shape& shape,
                          const std::vector<float>& values, const std::string& source_file) {
  if (!quant::can_quantize(dtype) || is_quantized(dtype)) dtype = DType::F32;
  HostBuffer& bytes = model.owned_tensors.emplace_back(dtype_bytes(dtype, shape.elements()));
  quant::quantize_row(dtype, values.data(), bytes.data(), shape.elements());
  TensorInfo info;
  info.name = name;
  info.view.dtype = dtype;
  info.view.shape = shape;
  info.view.data = bytes.data();
  info.file = source_file;
  info.bytes = bytes.size();
  return model.tensors.add_tensor(std::move(info));
}

Expected<const TensorInfo*> require_tensor(const Model& model, const std::string& name) {
  const TensorInfo* info = model.tensors.find(name);
  if (info == nullptr) {
    return Status::errorf("{}: missing tensor '{}' required by {}", model.path, name,
                          model.config.arch);
  }
  return info;
}

}  // namespace moenav
