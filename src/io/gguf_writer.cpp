// GGUF v3 writer, used by `moenav quantize` and by tests. Metadata is written in insertion order
// (llama.cpp's tools print it that way, and a re-written file should read like its source), tensor
// data aligned to general.alignment (32 unless set). Everything is validated before the first byte
// is written, so a bad call leaves no file behind.
#include <algorithm>
#include <bit>
#include <set>
#include <type_traits>
#include <utility>

#include "io/file_writer.h"
#include "io/gguf.h"
#include "io/gguf_format.h"

namespace moenav {
namespace {

template <typename T>
void put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

void put_string(std::string& out, const std::string& text) {
  put<uint64_t>(out, text.size());
  out += text;
}

// Appends a number stored in the variant as `Held` (uint64_t, int64_t or double) in the narrower
// on-disk type `Stored`, refusing values that do not fit rather than truncating them.
template <typename Stored, typename Held>
Status put_number(std::string& out, const GgufValue& value) {
  const Held* number = std::get_if<Held>(&value.value);
  if (number == nullptr) {
    return Status::errorf("{} value holds the wrong kind of number", gguf_type_name(value.type));
  }
  if constexpr (!std::is_floating_point_v<Stored>) {
    if (!std::in_range<Stored>(*number)) {
      return Status::errorf("{} does not fit in {}", *number, gguf_type_name(value.type));
    }
  }
  put<Stored>(out, static_cast<Stored>(*number));
  return ok_status();
}

Status put_value(std::string& out, const GgufValue& value, int depth);

Status put_array(std::string& out, const GgufValue& value, int depth) {
  const auto* elements = std::get_if<std::shared_ptr<GgufArray>>(&value.value);
  if (elements == nullptr || *elements == nullptr)
    return Status::error("array value holds no array");
  if (depth >= gguf::kMaxArrayDepth) {
    return Status::errorf("arrays nested more than {} deep", gguf::kMaxArrayDepth);
  }
  put<uint32_t>(out, static_cast<uint32_t>(value.element_type));
  put<uint64_t>(out, (*elements)->size());
  for (size_t i = 0; i < (*elements)->size(); ++i) {
    const GgufValue& element = (**elements)[i];
    if (element.type != value.element_type) {
      return Status::errorf("element {} is {} in an array of {}", i, gguf_type_name(element.type),
                            gguf_type_name(value.element_type));
    }
    MOENAV_RETURN_IF_ERROR(put_value(out, element, depth + 1));
  }
  return ok_status();
}

// The value's bytes without its type tag (arrays tag their elements once, not per element).
Status put_value(std::string& out, const GgufValue& value, int depth) {
  switch (value.type) {
    case GgufType::Uint8:
      return put_number<uint8_t, uint64_t>(out, value);
    case GgufType::Uint16:
      return put_number<uint16_t, uint64_t>(out, value);
    case GgufType::Uint32:
      return put_number<uint32_t, uint64_t>(out, value);
    case GgufType::Uint64:
      return put_number<uint64_t, uint64_t>(out, value);
    case GgufType::Int8:
      return put_number<int8_t, int64_t>(out, value);
    case GgufType::Int16:
      return put_number<int16_t, int64_t>(out, value);
    case GgufType::Int32:
      return put_number<int32_t, int64_t>(out, value);
    case GgufType::Int64:
      return put_number<int64_t, int64_t>(out, value);
    case GgufType::Float32:
      return put_number<float, double>(out, value);
    case GgufType::Float64:
      return put_number<double, double>(out, value);
    case GgufType::Bool: {
      const bool* flag = std::get_if<bool>(&value.value);
      if (flag == nullptr) return Status::error("bool value holds no bool");
      put<uint8_t>(out, *flag ? 1 : 0);
      return ok_status();
    }
    case GgufType::String: {
      const std::string* text = std::get_if<std::string>(&value.value);
      if (text == nullptr) return Status::error("string value holds no string");
      put_string(out, *text);
      return ok_status();
    }
    case GgufType::Array:
      return put_array(out, value, depth);
  }
  return Status::errorf("unknown value type {}", static_cast<uint32_t>(value.type));
}

GgufValue scalar(GgufType type, std::variant<uint64_t, int64_t, double, bool, std::string> held) {
  GgufValue value;
  value.type = type;
  std::visit([&](auto&& item) { value.value = std::move(item); }, std::move(held));
  return value;
}

template <typename T, typename Make>
GgufValue array(GgufType element_type, const std::vector<T>& items, Make make) {
  auto elements = std::make_shared<GgufArray>();
  elements->reserve(items.size());
  for (const T& item : items) elements->push_back(make(item));
  GgufValue value;
  value.type = GgufType::Array;
  value.element_type = element_type;
  value.value = std::move(elements);
  return value;
}

Expected<uint64_t> writer_alignment(
    const std::vector<std::pair<std::string, GgufValue>>& metadata) {
  for (const auto& [key, value] : metadata) {
    if (key != gguf::kAlignmentKey) continue;
    const uint64_t* alignment = std::get_if<uint64_t>(&value.value);
    if (value.type != GgufType::Uint32 || alignment == nullptr ||
        !std::has_single_bit(*alignment)) {
      return Status::errorf("metadata '{}' must be a uint32 power of two, not {}", key,
                            gguf_value_to_string(value));
    }
    return *alignment;
  }
  return gguf::kDefaultAlignment;
}

}  // namespace

void GgufWriter::set_value(const std::string& key, const GgufValue& value) {
  for (auto& [existing_key, existing_value] : metadata_) {
    if (existing_key == key) {  // replace in place: the key keeps its first position
      existing_value = value;
      return;
    }
  }
  metadata_.emplace_back(key, value);
}

void GgufWriter::set_string(const std::string& key, const std::string& value) {
  set_value(key, scalar(GgufType::String, value));
}
void GgufWriter::set_uint32(const std::string& key, uint32_t value) {
  set_value(key, scalar(GgufType::Uint32, uint64_t{value}));
}
void GgufWriter::set_int32(const std::string& key, int32_t value) {
  set_value(key, scalar(GgufType::Int32, int64_t{value}));
}
void GgufWriter::set_float32(const std::string& key, float value) {
  set_value(key, scalar(GgufType::Float32, double{value}));
}
void GgufWriter::set_bool(const std::string& key, bool value) {
  set_value(key, scalar(GgufType::Bool, value));
}
void GgufWriter::set_string_array(const std::string& key, const std::vector<std::string>& values) {
  set_value(key, array(GgufType::String, values,
                       [](const std::string& item) { return scalar(GgufType::String, item); }));
}
void GgufWriter::set_float32_array(const std::string& key, const std::vector<float>& values) {
  set_value(key, array(GgufType::Float32, values,
                       [](float item) { return scalar(GgufType::Float32, double{item}); }));
}
void GgufWriter::set_int32_array(const std::string& key, const std::vector<int32_t>& values) {
  set_value(key, array(GgufType::Int32, values,
                       [](int32_t item) { return scalar(GgufType::Int32, int64_t{item}); }));
}

void GgufWriter::add_tensor(const std::string& name, DType dtype, const Shape& shape,
                            const void* data) {
  tensors_.push_back({name, dtype, shape, data});
}

Status GgufWriter::write(const std::string& path) const {
  Expected<uint64_t> alignment = writer_alignment(metadata_);
  if (!alignment) return alignment.status().with_context(path);

  std::string header;
  put<uint32_t>(header, gguf::kMagic);
  put<uint32_t>(header, gguf::kVersion);
  put<uint64_t>(header, tensors_.size());
  put<uint64_t>(header, metadata_.size());
  for (const auto& [key, value] : metadata_) {
    put_string(header, key);
    put<uint32_t>(header, static_cast<uint32_t>(value.type));
    Status status = put_value(header, value, 0);
    if (!status.ok()) return status.with_context(fmt::format("{}: metadata '{}'", path, key));
  }

  std::set<std::string> names;
  uint64_t offset = 0;  // of the next tensor, relative to the data section
  for (const PendingTensor& tensor : tensors_) {
    const DTypeTraits& traits = dtype_traits(tensor.dtype);
    const int64_t row_elements = tensor.shape.rank == 0 ? 1 : tensor.shape[tensor.shape.rank - 1];
    if (tensor.name.empty() || !names.insert(tensor.name).second) {
      return Status::errorf("{}: tensor name '{}' is empty or given twice", path, tensor.name);
    }
    if (traits.ggml_type < 0 || !row_size_valid(tensor.dtype, row_elements)) {
      return Status::errorf("{}: tensor '{}': {} {} cannot be stored in GGUF", path, tensor.name,
                            traits.name, tensor.shape.to_string());
    }
    // ne[] is innermost-first; a scalar is written as one dimension of 1 as llama.cpp does.
    put_string(header, tensor.name);
    put<uint32_t>(header, static_cast<uint32_t>(std::max(tensor.shape.rank, 1)));
    if (tensor.shape.rank == 0) put<uint64_t>(header, 1);
    for (int d = tensor.shape.rank - 1; d >= 0; --d) put<uint64_t>(header, tensor.shape[d]);
    put<uint32_t>(header, static_cast<uint32_t>(traits.ggml_type));
    put<uint64_t>(header, offset);
    offset += (dtype_bytes(tensor.dtype, tensor.shape.elements()) + *alignment - 1) / *alignment *
              *alignment;
  }

  FileWriter writer(path);
  MOENAV_RETURN_IF_ERROR(writer.open());
  MOENAV_RETURN_IF_ERROR(writer.write(header.data(), header.size()));
  MOENAV_RETURN_IF_ERROR(writer.pad_to(*alignment));
  for (const PendingTensor& tensor : tensors_) {
    MOENAV_RETURN_IF_ERROR(
        writer.write(tensor.data, dtype_bytes(tensor.dtype, tensor.shape.elements())));
    MOENAV_RETURN_IF_ERROR(writer.pad_to(*alignment));
  }
  return writer.finish();
}

}  // namespace moenav
