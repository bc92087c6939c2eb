#include "core/tensor.h"

#include <fmt/format.h>

namespace moenav {

std::string Shape::to_string() const {
  std::string text = "[";
  for (int i = 0; i < rank; ++i) text += fmt::format("{}{}", i ? ", " : "", dims[i]);
  return text + "]";
}

TensorView TensorView::slice(int64_t index) const {
  MOENAV_CHECK(shape.rank >= 2 && index >= 0 && index < shape[0]);
  TensorView part;
  part.dtype = dtype;
  for (int i = 1; i < shape.rank; ++i) part.shape.dims[part.shape.rank++] = shape[i];
  part.data = static_cast<const uint8_t*>(data) + index * part.bytes();
  return part;
}

}  // namespace moenav
