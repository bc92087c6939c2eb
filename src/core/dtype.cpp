#include "core/dtype.h"

#include <array>
#include <cctype>
#include <string>

#include "core/check.h"

namespace moenav {
namespace {

constexpr std::array<DTypeTraits, static_cast<size_t>(DType::Count)> kTraits = {{
    {"f32", 1, 4, 0, false},
    {"f16", 1, 2, 1, false},
    {"bf16", 1, 2, 30, false},
    {"q8_0", 32, 34, 8, true},
    {"q4_0", 32, 18, 2, true},
    {"q4_k", 256, 144, 12, true},
    {"q5_k", 256, 176, 13, true},
    {"q6_k", 256, 210, 14, true},
    {"q2_k", 256, 84, 10, true},
    {"q3_k", 256, 110, 11, true},
    {"q8_k", 256, 292, 15, true},
    {"i8", 1, 1, 24, false},
    {"i16", 1, 2, 25, false},
    {"i32", 1, 4, 26, false},
    {"i64", 1, 8, 27, false},
    {"f64", 1, 8, 28, false},
}};
static_assert(kTraits.size() == static_cast<size_t>(DType::Count));

}  // namespace

const DTypeTraits& dtype_traits(DType type) {
  MOENAV_CHECK(type < DType::Count);
  return kTraits[static_cast<size_t>(type)];
}

int64_t dtype_bytes(DType type, int64_t elements) {
  const DTypeTraits& traits = dtype_traits(type);
  return elements / traits.block_size * traits.block_bytes;
}

std::optional<DType> dtype_from_name(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (size_t i = 0; i < kTraits.size(); ++i) {
    if (kTraits[i].name == lower) return static_cast<DType>(i);
  }
  return std::nullopt;
}

std::optional<DType> dtype_from_ggml(int ggml_type) {
  for (size_t i = 0; i < kTraits.size(); ++i) {
    if (kTraits[i].ggml_type == ggml_type) return static_cast<DType>(i);
  }
  return std::nullopt;
}

std::optional<DType> dtype_from_safetensors(std::string_view name) {
  struct Entry {
    std::string_view name;
    DType type;
  };
  static constexpr Entry kNames[] = {{"F32", DType::F32}, {"F16", DType::F16},
                                     {"BF16", DType::BF16}, {"I8", DType::I8},
                                     {"I16", DType::I16}, {"I32", DType::I32},
                                     {"I64", DType::I64}, {"F64", DType::F64}};
  for (const Entry& entry : kNames) {
    if (entry.name == name) return entry.type;
  }
  return std::nullopt;
}

}  // namespace moenav
