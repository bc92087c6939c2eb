// A non-owning view of a tensor's bytes: dtype, shape and a pointer into mapped or owned memory.
// Shapes are outer-first (PyTorch order): a linear weight is [out_features, in_features], stored
// row-major, each row in_features elements (quantized rows are whole blocks). GGUF's ne[] is the
// reverse and is flipped on load.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/check.h"
#include "core/dtype.h"

namespace moenav {

constexpr int kMaxDims = 4;

struct Shape {
  std::array<int64_t, kMaxDims> dims{};
  int rank = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> list) {
    MOENAV_CHECK(list.size() <= kMaxDims);
    for (int64_t d : list) dims[rank++] = d;
  }
  int64_t operator[](int i) const { return dims[i]; }
  int64_t elements() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= dims[i];
    return n;
  }
  bool operator==(const Shape& other) const {
    if (rank != other.rank) return false;
    for (int i = 0; i < rank; ++i)
      if (dims[i] != other.dims[i]) return false;
    return true;
  }
  std::string to_string() const;  // "[8, 256]"
};

struct TensorView {
  DType dtype = DType::F32;
  Shape shape;
  const void* data = nullptr;

  int64_t cols() const { return shape.rank == 0 ? 1 : shape[shape.rank - 1]; }
  int64_t rows() const { return shape.rank == 0 ? 1 : shape.elements() / cols(); }
  int64_t row_bytes() const { return dtype_bytes(dtype, cols()); }
  int64_t bytes() const { return rows() * row_bytes(); }
  const uint8_t* row(int64_t index) const {
    return static_cast<const uint8_t*>(data) + index * row_bytes();
  }
  bool empty() const { return data == nullptr; }
  // Sub-tensor `index` along the outermost dimension (an expert of a stacked [E, N, K] tensor).
  TensorView slice(int64_t index) const;
};

}  // namespace moenav
