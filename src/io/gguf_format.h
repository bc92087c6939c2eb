// Constants and per-type sizes of the GGUF container shared by the reader (gguf.cpp) and the
// writer (gguf_writer.cpp), so that both sides agree byte for byte. Internal to src/io.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include "io/gguf.h"

namespace moenav::gguf {

// The format is little-endian and we read it with memcpy into native integers.
static_assert(std::endian::native == std::endian::little, "GGUF I/O assumes a little-endian host");

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian uint32
constexpr uint32_t kVersion = 3;
constexpr uint64_t kDefaultAlignment = 32;
constexpr const char* kAlignmentKey = "general.alignment";
constexpr uint32_t kTypeCount = 13;  // GgufType values are 0 .. kTypeCount - 1
// Arrays of arrays are legal; a corrupt file could nest them until the parser's stack overflows.
constexpr int kMaxArrayDepth = 8;

// Bytes of one value of a fixed-size type; 0 for String and Array.
constexpr size_t scalar_bytes(GgufType type) {
  switch (type) {
    case GgufType::Uint8:
    case GgufType::Int8:
    case GgufType::Bool:
      return 1;
    case GgufType::Uint16:
    case GgufType::Int16:
      return 2;
    case GgufType::Uint32:
    case GgufType::Int32:
    case GgufType::Float32:
      return 4;
    case GgufType::Uint64:
    case GgufType::Int64:
    case GgufType::Float64:
      return 8;
    case GgufType::String:
    case GgufType::Array:
      return 0;
  }
  return 0;
}

// The fewest bytes one array element of `type` can occupy: a string is at least its 8-byte
// length, an array its 4-byte type and 8-byte count. Bounds element counts by the bytes left.
constexpr size_t min_element_bytes(GgufType type) {
  if (type == GgufType::String) return 8;
  if (type == GgufType::Array) return 12;
  return scalar_bytes(type);
}

constexpr bool is_unsigned(GgufType type) {
  return type == GgufType::Uint8 || type == GgufType::Uint16 || type == GgufType::Uint32 ||
         type == GgufType::Uint64;
}
constexpr bool is_signed(GgufType type) {
  return type == GgufType::Int8 || type == GgufType::Int16 || type == GgufType::Int32 ||
         type == GgufType::Int64;
}
constexpr bool is_float(GgufType type) {
  return type == GgufType::Float32 || type == GgufType::Float64;
}

}  // namespace moenav::gguf
