// GGUF v3 reader and writer (ggml's single-file format: metadata key/values, tensor infos,
// aligned tensor data). The reader memory-maps the file and checks every count, string length,
// type tag, dimension and offset against the file size before trusting it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "io/weight_index.h"

namespace moenav {

// gguf_type tags of metadata values.
enum class GgufType : uint32_t {
  Uint8 = 0, Int8 = 1, Uint16 = 2, Int16 = 3, Uint32 = 4, Int32 = 5, Float32 = 6, Bool = 7,
  String = 8, Array = 9, Uint64 = 10, Int64 = 11, Float64 = 12,
};

struct GgufValue;
using GgufArray = std::vector<GgufValue>;
struct GgufValue {
  GgufType type = GgufType::Uint32;
  std::variant<uint64_t, int64_t, double, bool, std::string, std::shared_ptr<GgufArray>> value;
  GgufType element_type = GgufType::Uint32;  // for arrays
};

std::string_view gguf_type_name(GgufType type);  // "uint32", "string", ...
// A short readable rendering for inspect and error messages: 6, 1e-05, "llama",
// [4096 x string: "<s>", "</s>", ...] (arrays show at most max_elements elements).
std::string gguf_value_to_string(const GgufValue& value, size_t max_elements = 8);

class GgufFile {
 public:
  static Expected<GgufFile> open(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  int64_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  // Metadata keys and tensor names in file order (for inspect, and for tools that rewrite a file
  // and should keep its layout).
  const std::vector<std::string>& metadata_keys() const { return metadata_keys_; }
  const std::vector<std::string>& tensor_names() const { return tensor_names_; }
  bool has(const std::string& key) const { return metadata_.count(key) != 0; }

  // Typed accessors: nullopt if missing or of an incompatible type. Integers of any width
  // convert to int64; get_float accepts floats and integers.
  std::optional<std::string> get_string(const std::string& key) const;
  std::optional<int64_t> get_int(const std::string& key) const;
  std::optional<double> get_float(const std::string& key) const;
  std::optional<bool> get_bool(const std::string& key) const;
  std::optional<std::vector<std::string>> get_string_array(const std::string& key) const;
  std::optional<std::vector<double>> get_float_array(const std::string& key) const;
  std::optional<std::vector<int64_t>> get_int_array(const std::string& key) const;

  // Tensors with outer-first shapes (ne[] reversed) and pointers into the mapping.
  WeightIndex& weights() { return weights_; }
  const WeightIndex& weights() const { return weights_; }

 private:
  std::string path_;
  uint32_t version_ = 0;
  int64_t alignment_ = 32;
  std::map<std::string, GgufValue> metadata_;
  std::vector<std::string> metadata_keys_;
  std::vector<std::string> tensor_names_;
  WeightIndex weights_;
  friend class GgufParser;
};

// Builds a GGUF v3 file. Tensor data is copied at write time from the given pointers, which must
// stay valid until write() returns.
class GgufWriter {
 public:
  void set_string(const std::string& key, const std::string& value);
  void set_uint32(const std::string& key, uint32_t value);
  void set_int32(const std::string& key, int32_t value);
  void set_float32(const std::string& key, float value);
  void set_bool(const std::string& key, bool value);
  void set_string_array(const std::string& key, const std::vector<std::string>& values);
  void set_float32_array(const std::string& key, const std::vector<float>& values);
  void set_int32_array(const std::string& key, const std::vector<int32_t>& values);
  void set_value(const std::string& key, const GgufValue& value);  // copy from another file

  // shape is outer-first; data holds dtype_bytes(dtype, shape.elements()) bytes.
  void add_tensor(const std::string& name, DType dtype, const Shape& shape, const void* data);
  Status write(const std::string& path) const;

 private:
  struct PendingTensor {
    std::string name;
    DType dtype;
    Shape shape;
    const void* data;
  };
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace moenav
