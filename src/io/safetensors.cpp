// Hugging Face safetensors reader and a small writer. A file is an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets: [begin, end)}} and the data section
// that the offsets index. Nothing in the header is trusted: a checkpoint can be truncated by an
// interrupted download or edited by hand, and the loader must say which file and which tensor is
// wrong instead of reading past the mapping.
#include "io/safetensors.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "io/file_writer.h"

namespace moenav {
namespace {

using Json = nlohmann::json;

constexpr const char* kSupportedDtypes = "F32, F16, BF16, F64, I8, I16, I32, I64";
constexpr uint64_t kHeaderLengthBytes = 8;

struct HeaderEntry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0;  // relative to the data section
  uint64_t end = 0;
};

// The JSON header; `data_bytes` receives the size of the data section that follows it.
Expected<Json> parse_header(const MappedFile& file, uint64_t& data_bytes) {
  if (file.size() < kHeaderLengthBytes) {
    return Status::errorf("file is {} bytes, too short for the 8-byte header length (truncated?)",
                          file.size());
  }
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = header_bytes << 8 | file.data()[i];
  uint64_t available = file.size() - kHeaderLengthBytes;
  if (header_bytes > available) {
    return Status::errorf(
        "header length {} runs past the end of the file ({} bytes; truncated, or "
        "not a safetensors file)",
        header_bytes, file.size());
  }
  data_bytes = available - header_bytes;
  const char* text = reinterpret_cast<const char*>(file.data() + kHeaderLengthBytes);
  try {
    Json header = Json::parse(text, text + header_bytes);
    if (!header.is_object()) return Status::error("header is not a JSON object");
    return header;
  } catch (const Json::exception& error) {
    return Status::errorf("header is not valid JSON: {}", error.what());
  }
}

Expected<uint64_t> non_negative_integer(const Json& value, const char* field) {
  if (!value.is_number_unsigned()) {
    return Status::errorf("'{}' holds {}, expected non-negative integers", field, value.dump());
  }
  return value.get<uint64_t>();
}

Expected<Shape> parse_shape(const Json& value) {
  if (!value.is_array()) return Status::errorf("'shape' is {}, expected an array", value.dump());
  if (value.size() > static_cast<size_t>(kMaxDims)) {
    return Status::errorf("shape {} has {} dimensions (at most {} supported)", value.dump(),
                          value.size(), kMaxDims);
  }
  Shape shape;
  for (const Json& dimension : value) {
    MOENAV_ASSIGN_OR_RETURN(uint64_t size, non_negative_integer(dimension, "shape"));
    if (size > static_cast<uint64_t>(INT64_MAX))
      return Status::errorf("shape {} overflows", value.dump());
    shape.dims[shape.rank++] = static_cast<int64_t>(size);
  }
  return shape;
}

// Bytes that `shape` elements of `dtype` occupy, or an error when the product overflows.
Expected<uint64_t> tensor_bytes(DType dtype, const Shape& shape) {
  uint64_t bytes = static_cast<uint64_t>(dtype_traits(dtype).block_bytes);
  for (int i = 0; i < shape.rank; ++i) {
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(shape[i]), &bytes)) {
      return Status::errorf("shape {} is too large", shape.to_string());
    }
  }
  return bytes;
}

Expected<HeaderEntry> parse_entry(const std::string& name, const Json& value, uint64_t data_bytes) {
  if (!value.is_object()) return Status::errorf("entry is {}, expected an object", value.dump());
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!value.contains(field)) return Status::errorf("entry has no '{}'", field);
  }
  HeaderEntry entry;
  entry.name = name;
  const Json& dtype = value["dtype"];
  if (!dtype.is_string()) return Status::errorf("'dtype' is {}, expected a string", dtype.dump());
  std::optional<DType> parsed = dtype_from_safetensors(dtype.get<std::string>());
  if (!parsed) {
    return Status::errorf("unknown dtype {} (supported: {})", dtype.dump(), kSupportedDtypes);
  }
  entry.dtype = *parsed;
  MOENAV_ASSIGN_OR_RETURN(entry.shape, parse_shape(value["shape"]));

  const Json& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) {
    return Status::errorf("'data_offsets' is {}, expected [begin, end]", offsets.dump());
  }
  MOENAV_ASSIGN_OR_RETURN(entry.begin, non_negative_integer(offsets[0], "data_offsets"));
  MOENAV_ASSIGN_OR_RETURN(entry.end, non_negative_integer(offsets[1], "data_offsets"));
  if (entry.begin > entry.end) {
    return Status::errorf("data_offsets [{}, {}] end before they begin", entry.begin, entry.end);
  }
  if (entry.end > data_bytes) {
    return Status::errorf("data_offsets [{}, {}] run past the end of the file ({} bytes of data)",
                          entry.begin, entry.end, data_bytes);
  }
  MOENAV_ASSIGN_OR_RETURN(uint64_t expected_bytes, tensor_bytes(entry.dtype, entry.shape));
  if (entry.end - entry.begin != expected_bytes) {
    return Status::errorf("data_offsets [{}, {}] hold {} bytes, but {} {} is {} bytes", entry.begin,
                          entry.end, entry.end - entry.begin, dtype_name(entry.dtype),
                          entry.shape.to_string(), expected_bytes);
  }
  return entry;
}

// Two tensors sharing bytes would alias weights silently; the format forbids it.
Status check_no_overlap(std::vector<HeaderEntry>& entries) {
  std::stable_sort(entries.begin(), entries.end(),
                   [](const HeaderEntry& a, const HeaderEntry& b) { return a.begin < b.begin; });
  const HeaderEntry* furthest = nullptr;  // the entry that ends last among those seen so far
  for (const HeaderEntry& current : entries) {
    if (furthest != nullptr && current.begin < furthest->end && current.begin != current.end) {
      return Status::errorf("tensor '{}': data_offsets [{}, {}] overlap tensor '{}' [{}, {}]",
                            current.name, current.begin, current.end, furthest->name,
                            furthest->begin, furthest->end);
    }
    if (furthest == nullptr || current.end > furthest->end) furthest = &current;
  }
  return ok_status();
}

// Every tensor of one file, validated, with views into the mapping.
Expected<std::vector<TensorInfo>> parse_file(const MappedFile& file) {
  uint64_t data_bytes = 0;
  MOENAV_ASSIGN_OR_RETURN(Json header, parse_header(file, data_bytes));
  std::vector<HeaderEntry> entries;
  entries.reserve(header.size());
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") continue;  // free-form strings ("format": "pt"), nothing we use
    Expected<HeaderEntry> entry = parse_entry(name, value, data_bytes);
    if (!entry) return entry.status().with_context(fmt::format("tensor '{}'", name));
    entries.push_back(std::move(entry.value()));
  }
  MOENAV_RETURN_IF_ERROR(check_no_overlap(entries));

  const uint64_t data_start = file.size() - data_bytes;
  std::vector<TensorInfo> tensors;
  tensors.reserve(entries.size());
  for (const HeaderEntry& entry : entries) {
    TensorInfo& info = tensors.emplace_back();
    info.name = entry.name;
    info.view.dtype = entry.dtype;
    info.view.shape = entry.shape;
    info.view.data = file.data() + data_start + entry.begin;
    info.file = file.path();
    info.file_offset = static_cast<int64_t>(data_start + entry.begin);
    info.bytes = static_cast<int64_t>(entry.end - entry.begin);
  }
  return tensors;
}

Expected<Json> read_json_file(const std::string& path) {
  std::ifstream stream(path);
  if (!stream) return Status::errorf("{}: cannot open: {}", path, std::strerror(errno));
  try {
    return Json::parse(stream);
  } catch (const Json::exception& error) {
    return Status::errorf("{}: not valid JSON: {}", path, error.what());
  }
}

// model.safetensors.index.json: {"weight_map": {tensor: shard file}}. Every shard it names is
// read, and every tensor it names must be in the shard it names (a stale index after re-sharding
// would otherwise load silently with tensors missing).
Status read_sharded(const std::filesystem::path& directory, const std::filesystem::path& index_path,
                    WeightIndex& index) {
  const std::string index_name = index_path.string();
  MOENAV_ASSIGN_OR_RETURN(Json index_json, read_json_file(index_name));
  if (!index_json.is_object() || !index_json.contains("weight_map") ||
      !index_json["weight_map"].is_object()) {
    return Status::errorf("{}: no \"weight_map\" object", index_name);
  }
  const Json& weight_map = index_json["weight_map"];
  std::set<std::string> shards;
  for (const auto& [tensor, shard] : weight_map.items()) {
    if (!shard.is_string()) {
      return Status::errorf("{}: weight_map entry '{}' is {}, expected a file name", index_name,
                            tensor, shard.dump());
    }
    shards.insert(shard.get<std::string>());
  }
  for (const std::string& shard : shards) {
    std::filesystem::path shard_path = directory / shard;
    if (!std::filesystem::exists(shard_path)) {
      return Status::errorf("{}: names shard '{}', which does not exist in {}", index_name, shard,
                            directory.string());
    }
    MOENAV_RETURN_IF_ERROR(read_safetensors_file(shard_path.string(), index));
  }
  for (const auto& [tensor, shard] : weight_map.items()) {
    const std::string expected_file = (directory / shard.get<std::string>()).string();
    const TensorInfo* info = index.find(tensor);
    if (info == nullptr || info->file != expected_file) {
      return Status::errorf("{}: tensor '{}' should be in {}, but {}", index_name, tensor,
                            expected_file, info ? "it is in " + info->file : "it was not found");
    }
  }
  return ok_status();
}

// The last resort when there is neither model.safetensors nor an index: every *.safetensors.
Status read_all_files(const std::filesystem::path& directory, WeightIndex& index) {
  std::vector<std::string> paths;
  std::error_code error;
  for (const auto& item : std::filesystem::directory_iterator(directory, error)) {
    if (item.path().extension() == ".safetensors") paths.push_back(item.path().string());
  }
  if (error) return Status::errorf("{}: cannot list: {}", directory.string(), error.message());
  if (paths.empty()) {
    return Status::errorf("{}: no model.safetensors, model.safetensors.index.json or *.safetensors",
                          directory.string());
  }
  std::sort(paths.begin(), paths.end());
  for (const std::string& path : paths) MOENAV_RETURN_IF_ERROR(read_safetensors_file(path, index));
  return ok_status();
}

Expected<std::string> safetensors_dtype_name(DType dtype) {
  std::string name(dtype_name(dtype));
  for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (!dtype_from_safetensors(name)) {
    return Status::errorf("dtype {} cannot be stored in safetensors", dtype_name(dtype));
  }
  return name;
}

// The header for `tensors`, padded with spaces so the data section starts 8-byte aligned (the
// format's recommendation, which lets readers use F32/I64 data in place).
Expected<std::string> build_header(const std::vector<SafetensorsOutput>& tensors) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const SafetensorsOutput& tensor : tensors) {
    if (!names.insert(tensor.name).second)
      return Status::errorf("tensor '{}' given twice", tensor.name);
    MOENAV_ASSIGN_OR_RETURN(std::string dtype, safetensors_dtype_name(tensor.dtype));
    std::vector<int64_t> shape(tensor.shape.dims.begin(),
                               tensor.shape.dims.begin() + tensor.shape.rank);
    const uint64_t bytes =
        static_cast<uint64_t>(dtype_bytes(tensor.dtype, tensor.shape.elements()));
    header[tensor.name] = {
        {"dtype", dtype}, {"shape", shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

}  // namespace

Status read_safetensors_file(const std::string& path, WeightIndex& index) {
  MOENAV_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
  Expected<std::vector<TensorInfo>> tensors = parse_file(*file);
  if (!tensors) return tensors.status().with_context(path);
  // The file joins the index first so that the views stay valid even if a duplicate name stops
  // the loop half way.
  index.add_file(std::move(file));
  for (TensorInfo& info : tensors.value())
    MOENAV_RETURN_IF_ERROR(index.add_tensor(std::move(info)));
  return ok_status();
}

Expected<WeightIndex> read_safetensors_dir(const std::string& directory) {
  const std::filesystem::path root(directory);
  if (!std::filesystem::is_directory(root)) {
    return Status::errorf("{}: not a directory (expected a Hugging Face model directory)",
                          directory);
  }
  WeightIndex index;
  if (std::filesystem::exists(root / "model.safetensors")) {
    MOENAV_RETURN_IF_ERROR(read_safetensors_file((root / "model.safetensors").string(), index));
  } else if (std::filesystem::exists(root / "model.safetensors.index.json")) {
    MOENAV_RETURN_IF_ERROR(read_sharded(root, root / "model.safetensors.index.json", index));
  } else {
    MOENAV_RETURN_IF_ERROR(read_all_files(root, index));
  }
  return index;
}

Status write_safetensors(const std::string& path, const std::vector<SafetensorsOutput>& tensors) {
  Expected<std::string> header = build_header(tensors);
  if (!header) return header.status().with_context(path);
  uint8_t length[8];
  uint64_t header_bytes = header->size();
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(header_bytes >> (8 * i));

  FileWriter writer(path);
  MOENAV_RETURN_IF_ERROR(writer.open());
  MOENAV_RETURN_IF_ERROR(writer.write(length, sizeof(length)));
  MOENAV_RETURN_IF_ERROR(writer.write(header->data(), header->size()));
  for (const SafetensorsOutput& tensor : tensors) {
    const auto bytes = static_cast<size_t>(dtype_bytes(tensor.dtype, tensor.shape.elements()));
    MOENAV_RETURN_IF_ERROR(writer.write(tensor.data, bytes));
  }
  return writer.finish();
}

}  // namespace moenav
