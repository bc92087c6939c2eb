// GGUF reader: llama.cpp's single-file checkpoint (header, metadata key/values, tensor infos,
// aligned tensor data). Layout: "GGUF", uint32 version, uint64 tensor count, uint64 kv count, the
// key/values, the tensor infos (name, n_dims, ne[n_dims], ggml type, offset into the data section),
// padding to general.alignment, the data. The file is mapped and every count, length, type tag,
// dimension and offset is checked against the bytes that remain before anything is allocated or
// dereferenced, because GGUF files come from the internet and from our own quantizer.
#include "io/gguf.h"

#include <algorithm>
#include <cstring>

#include "io/gguf_format.h"

namespace moenav {
namespace {

// Bounds-checked little-endian cursor over the mapping. Errors name the byte offset so a
// corrupt file can be looked at with a hex dump.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  size_t position() const { return position_; }
  size_t remaining() const { return size_ - position_; }

  template <typename T>
  Status read(T& out, std::string_view what) {
    if (remaining() < sizeof(T)) {
      return Status::errorf("truncated: {} at byte {} needs {} bytes, the file ends at {}", what,
                            position_, sizeof(T), size_);
    }
    std::memcpy(&out, data_ + position_, sizeof(T));
    position_ += sizeof(T);
    return ok_status();
  }

  Status read_string(std::string& out, std::string_view what) {
    uint64_t length = 0;
    MOENAV_RETURN_IF_ERROR(read(length, what));
    if (length > remaining()) {
      return Status::errorf("{} at byte {} has length {}, more than the {} bytes left in the file",
                            what, position_ - 8, length, remaining());
    }
    out.assign(reinterpret_cast<const char*>(data_ + position_), length);
    position_ += length;
    return ok_status();
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t position_ = 0;
};

// ggml type names, for telling the user which format a tensor we cannot load uses.
std::string_view ggml_type_name(uint32_t type) {
  static constexpr std::string_view kNames[] = {
      "f32",   "f16",        "q4_0",       "q4_1",       "q4_2",     "q4_3",     "q5_0",
      "q5_1",  "q8_0",       "q8_1",       "q2_k",       "q3_k",     "q4_k",     "q5_k",
      "q6_k",  "q8_k",       "iq2_xxs",    "iq2_xs",     "iq3_xxs",  "iq1_s",    "iq4_nl",
      "iq3_s", "iq2_s",      "iq4_xs",     "i8",         "i16",      "i32",      "i64",
      "f64",   "iq1_m",      "bf16",       "q4_0_4_4",   "q4_0_4_8", "q4_0_8_8", "tq1_0",
      "tq2_0", "iq4_nl_4_4", "iq4_nl_4_8", "iq4_nl_8_8", "mxfp4"};
  return type < std::size(kNames) ? kNames[type] : "unknown";
}

uint64_t align_up(uint64_t value, uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

struct RawTensor {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;          // outer-first
  uint64_t offset = 0;  // relative to the data section
  uint64_t bytes = 0;
};

}  // namespace

// Parses one mapped file into a GgufFile. A class (not free functions) because every step shares
// the cursor and the output; named in gguf.h as a friend so it can fill GgufFile's members.
class GgufParser {
 public:
  GgufParser(const MappedFile& file, GgufFile& out)
      : file_(file), out_(out), reader_(file.data(), file.size()) {}

  Status parse() {
    uint64_t tensor_count = 0, kv_count = 0;
    MOENAV_RETURN_IF_ERROR(parse_header(tensor_count, kv_count));
    MOENAV_RETURN_IF_ERROR(parse_metadata(kv_count));
    MOENAV_RETURN_IF_ERROR(parse_alignment());
    MOENAV_RETURN_IF_ERROR(parse_tensor_infos(tensor_count));
    return place_tensors();
  }

  std::vector<RawTensor>& tensors() { return tensors_; }
  uint64_t data_start() const { return data_start_; }

 private:
  Status parse_header(uint64_t& tensor_count, uint64_t& kv_count) {
    uint32_t magic = 0, version = 0;
    MOENAV_RETURN_IF_ERROR(reader_.read(magic, "magic"));
    if (magic != gguf::kMagic) {
      std::string text(reinterpret_cast<const char*>(file_.data()), 4);
      for (char& c : text) c = (c >= 32 && c < 127) ? c : '?';
      return Status::errorf("not a GGUF file (starts with '{}', expected 'GGUF')", text);
    }
    MOENAV_RETURN_IF_ERROR(reader_.read(version, "version"));
    if (version == 1) {
      return Status::error("GGUF version 1 is not supported; re-convert with a current llama.cpp");
    }
    if (version >= 0x01000000) return Status::error("big-endian GGUF files are not supported");
    if (version != 2 && version != 3) {
      return Status::errorf("GGUF version {} is not supported (expected 2 or 3)", version);
    }
    out_.version_ = version;
    MOENAV_RETURN_IF_ERROR(reader_.read(tensor_count, "tensor count"));
    MOENAV_RETURN_IF_ERROR(reader_.read(kv_count, "metadata count"));
    // The smallest key/value is an 8-byte key length, a 4-byte type and a 1-byte value; the
    // smallest tensor info 8 + 4 + 4 + 8 bytes. Counts beyond that are corrupt, not big.
    if (kv_count > reader_.remaining() / 13 || tensor_count > reader_.remaining() / 24) {
      return Status::errorf(
          "header claims {} metadata entries and {} tensors, more than the file's "
          "{} bytes can hold (corrupt header)",
          kv_count, tensor_count, file_.size());
    }
    return ok_status();
  }

  Status parse_metadata(uint64_t kv_count) {
    out_.metadata_keys_.reserve(kv_count);
    for (uint64_t i = 0; i < kv_count; ++i) {
      std::string key;
      MOENAV_RETURN_IF_ERROR(reader_.read_string(key, fmt::format("metadata key #{}", i)));
      Status status = parse_metadata_value(key);
      if (!status.ok()) return status.with_context(fmt::format("metadata '{}'", key));
      out_.metadata_keys_.push_back(std::move(key));
    }
    return ok_status();
  }

  Status parse_metadata_value(const std::string& key) {
    uint32_t type = 0;
    MOENAV_RETURN_IF_ERROR(reader_.read(type, "value type"));
    MOENAV_ASSIGN_OR_RETURN(GgufValue value, parse_value(type, 0));
    if (!out_.metadata_.emplace(key, std::move(value)).second) {
      return Status::error("the key appears twice");
    }
    return ok_status();
  }

  Expected<GgufValue> parse_value(uint32_t type_id, int depth) {
    if (type_id >= gguf::kTypeCount) return Status::errorf("unknown value type {}", type_id);
    GgufValue value;
    value.type = static_cast<GgufType>(type_id);
    switch (value.type) {
      case GgufType::Uint8:
        return parse_number<uint8_t, uint64_t>(value);
      case GgufType::Uint16:
        return parse_number<uint16_t, uint64_t>(value);
      case GgufType::Uint32:
        return parse_number<uint32_t, uint64_t>(value);
      case GgufType::Uint64:
        return parse_number<uint64_t, uint64_t>(value);
      case GgufType::Int8:
        return parse_number<int8_t, int64_t>(value);
      case GgufType::Int16:
        return parse_number<int16_t, int64_t>(value);
      case GgufType::Int32:
        return parse_number<int32_t, int64_t>(value);
      case GgufType::Int64:
        return parse_number<int64_t, int64_t>(value);
      case GgufType::Float32:
        return parse_number<float, double>(value);
      case GgufType::Float64:
        return parse_number<double, double>(value);
      case GgufType::Bool: {
        uint8_t byte = 0;
        MOENAV_RETURN_IF_ERROR(reader_.read(byte, "bool value"));
        if (byte > 1) {
          return Status::errorf("bool value {} at byte {} is neither 0 nor 1", byte,
                                reader_.position() - 1);
        }
        value.value = byte == 1;
        return value;
      }
      case GgufType::String: {
        std::string text;
        MOENAV_RETURN_IF_ERROR(reader_.read_string(text, "string value"));
        value.value = std::move(text);
        return value;
      }
      case GgufType::Array:
        return parse_array(std::move(value), depth);
    }
    return Status::errorf("unknown value type {}", type_id);
  }

  template <typename Stored, typename Held>
  Expected<GgufValue> parse_number(GgufValue& value) {
    Stored number{};
    MOENAV_RETURN_IF_ERROR(reader_.read(number, gguf_type_name(value.type)));
    value.value = static_cast<Held>(number);
    return std::move(value);
  }

  Expected<GgufValue> parse_array(GgufValue value, int depth) {
    if (depth >= gguf::kMaxArrayDepth) {
      return Status::errorf("arrays nested more than {} deep", gguf::kMaxArrayDepth);
    }
    uint32_t element_type = 0;
    uint64_t count = 0;
    MOENAV_RETURN_IF_ERROR(reader_.read(element_type, "array element type"));
    MOENAV_RETURN_IF_ERROR(reader_.read(count, "array length"));
    if (element_type >= gguf::kTypeCount) {
      return Status::errorf("array of unknown element type {}", element_type);
    }
    value.element_type = static_cast<GgufType>(element_type);
    const size_t min_bytes = gguf::min_element_bytes(value.element_type);
    if (count > reader_.remaining() / min_bytes) {
      return Status::errorf(
          "array of {} {} elements at byte {} needs at least {} bytes, only {} "
          "left in the file",
          count, gguf_type_name(value.element_type), reader_.position() - 12,
          static_cast<double>(count) * min_bytes, reader_.remaining());
    }
    auto elements = std::make_shared<GgufArray>();
    elements->reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      Expected<GgufValue> element = parse_value(element_type, depth + 1);
      if (!element) return element.status().with_context(fmt::format("element {}", i));
      elements->push_back(std::move(element.value()));
    }
    value.value = std::move(elements);
    return value;
  }

  Status parse_alignment() {
    auto it = out_.metadata_.find(gguf::kAlignmentKey);
    if (it == out_.metadata_.end()) return ok_status();
    std::optional<int64_t> alignment = out_.get_int(gguf::kAlignmentKey);
    if (!alignment || *alignment <= 0 || !std::has_single_bit(static_cast<uint64_t>(*alignment))) {
      return Status::errorf("metadata '{}' is {}, expected a power of two", gguf::kAlignmentKey,
                            gguf_value_to_string(it->second));
    }
    out_.alignment_ = *alignment;
    return ok_status();
  }

  Status parse_tensor_infos(uint64_t count) {
    tensors_.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      RawTensor tensor;
      MOENAV_RETURN_IF_ERROR(
          reader_.read_string(tensor.name, fmt::format("name of tensor #{}", i)));
      Status status = parse_tensor_info(tensor);
      if (!status.ok()) return status.with_context(fmt::format("tensor '{}'", tensor.name));
      tensors_.push_back(std::move(tensor));
    }
    return ok_status();
  }

  Status parse_tensor_info(RawTensor& tensor) {
    if (tensor.name.empty()) return Status::error("empty tensor name");
    uint32_t rank = 0;
    MOENAV_RETURN_IF_ERROR(reader_.read(rank, "number of dimensions"));
    if (rank > static_cast<uint32_t>(kMaxDims)) {
      return Status::errorf("{} dimensions (at most {} supported)", rank, kMaxDims);
    }
    uint64_t ne[kMaxDims] = {};  // ggml order: ne[0] is the innermost (contiguous) dimension
    for (uint32_t d = 0; d < rank; ++d) MOENAV_RETURN_IF_ERROR(reader_.read(ne[d], "dimension"));
    uint32_t ggml_type = 0;
    MOENAV_RETURN_IF_ERROR(reader_.read(ggml_type, "tensor type"));
    MOENAV_RETURN_IF_ERROR(reader_.read(tensor.offset, "tensor data offset"));

    std::optional<DType> dtype;
    if (ggml_type <= static_cast<uint32_t>(INT32_MAX))
      dtype = dtype_from_ggml(static_cast<int>(ggml_type));
    if (!dtype) {
      return Status::errorf("ggml type {} ({}) is not supported by moenav", ggml_type,
                            ggml_type_name(ggml_type));
    }
    tensor.dtype = *dtype;
    tensor.shape.rank = static_cast<int>(rank);
    for (uint32_t d = 0; d < rank; ++d) {
      if (ne[d] > static_cast<uint64_t>(INT64_MAX))
        return Status::errorf("dimension {} overflows", ne[d]);
      tensor.shape.dims[rank - 1 - d] = static_cast<int64_t>(ne[d]);
    }
    return compute_bytes(tensor, rank == 0 ? 1 : ne[0]);
  }

  Status compute_bytes(RawTensor& tensor, uint64_t row_elements) {
    const DTypeTraits& traits = dtype_traits(tensor.dtype);
    if (row_elements % static_cast<uint64_t>(traits.block_size) != 0) {
      return Status::errorf(
          "{} {}: rows of {} elements are not a whole number of {}-element blocks", traits.name,
          tensor.shape.to_string(), row_elements, traits.block_size);
    }
    uint64_t blocks = 1;
    bool overflow = false;
    for (int d = 0; d < tensor.shape.rank; ++d) {
      uint64_t size = static_cast<uint64_t>(tensor.shape[d]);
      if (d == tensor.shape.rank - 1) size /= static_cast<uint64_t>(traits.block_size);
      overflow |= __builtin_mul_overflow(blocks, size, &blocks);
    }
    overflow |=
        __builtin_mul_overflow(blocks, static_cast<uint64_t>(traits.block_bytes), &tensor.bytes);
    if (overflow) return Status::errorf("shape {} is too large", tensor.shape.to_string());
    return ok_status();
  }

  // The data section starts at the first aligned byte after the tensor infos; every tensor must
  // start aligned inside it, end inside the file, and not share bytes with another tensor.
  Status place_tensors() {
    const uint64_t alignment = static_cast<uint64_t>(out_.alignment_);
    data_start_ = align_up(reader_.position(), alignment);
    const uint64_t data_bytes = data_start_ <= file_.size() ? file_.size() - data_start_ : 0;
    for (const RawTensor& tensor : tensors_) {
      if (tensor.offset % alignment != 0) {
        return Status::errorf("tensor '{}': data offset {} is not a multiple of the alignment {}",
                              tensor.name, tensor.offset, alignment);
      }
      if (tensor.offset > data_bytes || tensor.bytes > data_bytes - tensor.offset) {
        return Status::errorf(
            "tensor '{}': {} bytes at data offset {} run past the end of the "
            "file ({} bytes of data; truncated?)",
            tensor.name, tensor.bytes, tensor.offset, data_bytes);
      }
    }
    std::vector<const RawTensor*> by_offset;
    by_offset.reserve(tensors_.size());
    for (const RawTensor& tensor : tensors_) by_offset.push_back(&tensor);
    std::stable_sort(by_offset.begin(), by_offset.end(),
                     [](const RawTensor* a, const RawTensor* b) { return a->offset < b->offset; });
    const RawTensor* furthest = nullptr;  // the tensor that ends last among those seen so far
    for (const RawTensor* current : by_offset) {
      if (furthest != nullptr && current->bytes != 0 &&
          current->offset < furthest->offset + furthest->bytes) {
        return Status::errorf("tensor '{}' (data offset {}) overlaps tensor '{}' ({} bytes at {})",
                              current->name, current->offset, furthest->name, furthest->bytes,
                              furthest->offset);
      }
      if (furthest == nullptr ||
          current->offset + current->bytes > furthest->offset + furthest->bytes) {
        furthest = current;
      }
    }
    return ok_status();
  }

  const MappedFile& file_;
  GgufFile& out_;
  ByteReader reader_;
  std::vector<RawTensor> tensors_;
  uint64_t data_start_ = 0;
};

Expected<GgufFile> GgufFile::open(const std::string& path) {
  MOENAV_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> mapping, MappedFile::open(path));
  GgufFile file;
  file.path_ = path;
  GgufParser parser(*mapping, file);
  MOENAV_RETURN_IF_ERROR(parser.parse().with_context(path));

  file.weights_.add_file(mapping);
  file.tensor_names_.reserve(parser.tensors().size());
  for (RawTensor& tensor : parser.tensors()) {
    const uint64_t absolute = parser.data_start() + tensor.offset;
    TensorInfo info;
    info.name = tensor.name;
    info.view.dtype = tensor.dtype;
    info.view.shape = tensor.shape;
    info.view.data = mapping->data() + absolute;
    info.file = path;
    info.file_offset = static_cast<int64_t>(absolute);
    info.bytes = static_cast<int64_t>(tensor.bytes);
    if (file.weights_.find(info.name) != nullptr) {
      return Status::errorf("{}: tensor '{}' appears twice", path, info.name);
    }
    MOENAV_RETURN_IF_ERROR(file.weights_.add_tensor(std::move(info)));
    file.tensor_names_.push_back(std::move(tensor.name));
  }
  return file;
}

// ---- Typed accessors -------------------------------------------------------------------------

namespace {

std::optional<int64_t> as_int(const GgufValue& value) {
  if (gguf::is_signed(value.type)) return std::get<int64_t>(value.value);
  if (gguf::is_unsigned(value.type)) {
    uint64_t number = std::get<uint64_t>(value.value);
    if (number <= static_cast<uint64_t>(INT64_MAX)) return static_cast<int64_t>(number);
  }
  return std::nullopt;
}

std::optional<double> as_float(const GgufValue& value) {
  if (gguf::is_float(value.type)) return std::get<double>(value.value);
  if (gguf::is_signed(value.type)) return static_cast<double>(std::get<int64_t>(value.value));
  if (gguf::is_unsigned(value.type)) return static_cast<double>(std::get<uint64_t>(value.value));
  return std::nullopt;
}

std::optional<std::string> as_string(const GgufValue& value) {
  if (value.type != GgufType::String) return std::nullopt;
  return std::get<std::string>(value.value);
}

// Converts every element of an array value with `convert`; nullopt if any element does not.
template <typename T, typename Convert>
std::optional<std::vector<T>> as_array(const GgufValue* value, Convert convert) {
  if (value == nullptr || value->type != GgufType::Array) return std::nullopt;
  const GgufArray& elements = *std::get<std::shared_ptr<GgufArray>>(value->value);
  std::vector<T> result;
  result.reserve(elements.size());
  for (const GgufValue& element : elements) {
    std::optional<T> converted = convert(element);
    if (!converted) return std::nullopt;
    result.push_back(std::move(*converted));
  }
  return result;
}

// Tokens include quotes, backslashes and control bytes; escape them so one value stays one line.
std::string quoted(const std::string& text) {
  std::string result = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      result += '\\';
      result += c;
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      result += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
    } else {
      result += c;
    }
  }
  return result + '"';
}

const GgufValue* find_value(const std::map<std::string, GgufValue>& metadata,
                            const std::string& key) {
  auto it = metadata.find(key);
  return it == metadata.end() ? nullptr : &it->second;
}

}  // namespace

std::optional<std::string> GgufFile::get_string(const std::string& key) const {
  const GgufValue* value = find_value(metadata_, key);
  return value ? as_string(*value) : std::nullopt;
}

std::optional<int64_t> GgufFile::get_int(const std::string& key) const {
  const GgufValue* value = find_value(metadata_, key);
  return value ? as_int(*value) : std::nullopt;
}

std::optional<double> GgufFile::get_float(const std::string& key) const {
  const GgufValue* value = find_value(metadata_, key);
  return value ? as_float(*value) : std::nullopt;
}

std::optional<bool> GgufFile::get_bool(const std::string& key) const {
  const GgufValue* value = find_value(metadata_, key);
  if (value == nullptr || value->type != GgufType::Bool) return std::nullopt;
  return std::get<bool>(value->value);
}

std::optional<std::vector<std::string>> GgufFile::get_string_array(const std::string& key) const {
  return as_array<std::string>(find_value(metadata_, key), as_string);
}

std::optional<std::vector<double>> GgufFile::get_float_array(const std::string& key) const {
  return as_array<double>(find_value(metadata_, key), as_float);
}

std::optional<std::vector<int64_t>> GgufFile::get_int_array(const std::string& key) const {
  return as_array<int64_t>(find_value(metadata_, key), as_int);
}

std::string_view gguf_type_name(GgufType type) {
  static constexpr std::string_view kNames[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                                "int32",  "float32", "bool",   "string", "array",
                                                "uint64", "int64",   "float64"};
  static_assert(std::size(kNames) == gguf::kTypeCount);
  auto index = static_cast<uint32_t>(type);
  return index < gguf::kTypeCount ? kNames[index] : "unknown";
}

std::string gguf_value_to_string(const GgufValue& value, size_t max_elements) {
  if (value.type == GgufType::String) return quoted(std::get<std::string>(value.value));
  if (value.type == GgufType::Bool) return std::get<bool>(value.value) ? "true" : "false";
  if (gguf::is_float(value.type)) return fmt::format("{}", std::get<double>(value.value));
  if (gguf::is_signed(value.type)) return fmt::format("{}", std::get<int64_t>(value.value));
  if (gguf::is_unsigned(value.type)) return fmt::format("{}", std::get<uint64_t>(value.value));
  if (value.type != GgufType::Array) return "?";
  const GgufArray& elements = *std::get<std::shared_ptr<GgufArray>>(value.value);
  std::string text = fmt::format("[{} x {}:", elements.size(), gguf_type_name(value.element_type));
  for (size_t i = 0; i < elements.size() && i < max_elements; ++i) {
    text += (i ? ", " : " ") + gguf_value_to_string(elements[i], max_elements);
  }
  return text + (elements.size() > max_elements ? ", ...]" : "]");
}

}  // namespace moenav
