// Element types of tensors, including ggml-compatible block-quantized formats.
// A quantized row of n elements is n / block_size blocks of block_bytes bytes each; the
// layouts are bit-compatible with ggml so GGUF files from llama.cpp load without conversion.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace moenav {

enum class DType : uint8_t {
  F32,
  F16,
  BF16,
  Q8_0,
  Q4_0,
  Q4_K,
  Q5_K,
  Q6_K,
  Q2_K,
  Q3_K,
  Q8_K,  // activation format for k-quant dot products (never a weight type on disk in practice)
  I8,
  I16,
  I32,
  I64,
  F64,
  Count
};

struct DTypeTraits {
  std::string_view name;   // lower-case, as used on the command line: "q4_k"
  int64_t block_size;      // elements per block (1 for plain types)
  int64_t block_bytes;     // bytes per block
  int ggml_type;           // ggml_type id in GGUF files, -1 if GGUF cannot hold it
  bool is_quantized;
};

const DTypeTraits& dtype_traits(DType type);
inline std::string_view dtype_name(DType type) { return dtype_traits(type).name; }
inline bool is_quantized(DType type) { return dtype_traits(type).is_quantized; }
inline int64_t dtype_block_size(DType type) { return dtype_traits(type).block_size; }

// Bytes of n elements; n must be a multiple of the block size (see row_bytes_valid).
int64_t dtype_bytes(DType type, int64_t elements);
inline bool row_size_valid(DType type, int64_t elements) {
  return elements % dtype_block_size(type) == 0;
}

std::optional<DType> dtype_from_name(std::string_view name);       // "q8_0", "bf16", ...
std::optional<DType> dtype_from_ggml(int ggml_type);
std::optional<DType> dtype_from_safetensors(std::string_view name);  // "BF16", "F32", ...

}  // namespace moenav
