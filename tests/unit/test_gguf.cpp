// GGUF reader/writer: files written by llama.cpp's own converter (tiny-mixtral, tiny-qwen3-moe),
// a writer round trip, and corrupted files, each of which must give one line naming the file and
// the problem and never read outside the mapping.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "io/gguf.h"
#include "io/safetensors.h"
#include "test_paths.h"

namespace moenav {
namespace {

namespace fs = std::filesystem;

constexpr const char* kMixtralGguf = "models/tiny-mixtral/llama.cpp/tiny-mixtral-q8_0.gguf";
constexpr const char* kQwenGguf = "models/tiny-qwen3-moe/llama.cpp/tiny-qwen3-moe-q8_0.gguf";

class TempDir {
 public:
  TempDir() {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            fmt::format("moenav_gguf_{}_{}_{}", ::getpid(), test->test_suite_name(), test->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::string read_bytes(const std::string& path) {
  std::ifstream stream(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(stream), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream stream(path, std::ios::binary | std::ios::trunc);
  stream.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <typename T>
void patch(std::string& bytes, size_t at, T value) {
  ASSERT_LE(at + sizeof(T), bytes.size());
  std::memcpy(bytes.data() + at, &value, sizeof(T));
}

// Position just after the first occurrence of `needle` (a key or tensor name in the header).
size_t after(const std::string& bytes, const std::string& needle) {
  size_t at = bytes.find(needle);
  EXPECT_NE(at, std::string::npos) << needle;
  return at + needle.size();
}

// Opening must fail with one line that starts with the path and contains every `part`.
void expect_open_error(const std::string& path, std::initializer_list<std::string> parts) {
  Expected<GgufFile> file = GgufFile::open(path);
  ASSERT_FALSE(file.ok()) << "expected an error for " << path;
  const std::string& message = file.error();
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << message;
  for (const std::string& part : parts) EXPECT_NE(message.find(part), std::string::npos) << message;
}

float bf16_to_float(const uint8_t* bytes) {
  uint32_t bits = static_cast<uint32_t>(bytes[0] | bytes[1] << 8) << 16;
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

TEST(Gguf, ReadsTinyMixtralFromLlamaCpp) {
  MOENAV_REQUIRE_SHARED(kMixtralGguf);
  const std::string path = testing::shared_path(kMixtralGguf);
  Expected<GgufFile> file = GgufFile::open(path);
  ASSERT_TRUE(file.ok()) << file.error();
  EXPECT_EQ(file->version(), 3u);
  EXPECT_EQ(file->alignment(), 32);
  // llama.cpp converts Mixtral as a llama model with experts.
  EXPECT_EQ(file->get_string("general.architecture"), "llama");
  EXPECT_EQ(file->metadata().size(), 28u);
  EXPECT_EQ(file->metadata_keys().front(), "general.architecture");
  EXPECT_EQ(file->get_int("llama.block_count"), 6);
  EXPECT_EQ(file->get_int("llama.expert_count"), 8);
  EXPECT_EQ(file->get_int("llama.expert_used_count"), 2);
  EXPECT_EQ(file->get_float("llama.rope.freq_base"), 1e6);
  EXPECT_NEAR(*file->get_float("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-12);
  EXPECT_FALSE(file->get_int("general.architecture").has_value());  // a string, not an int
  EXPECT_FALSE(file->get_string("llama.block_count").has_value());
  EXPECT_FALSE(file->get_string("no.such.key").has_value());

  std::optional<std::vector<std::string>> tokens = file->get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.has_value());
  EXPECT_EQ(tokens->size(), 4096u);
  EXPECT_EQ(tokens->front(), "<|endoftext|>");
  EXPECT_EQ(file->get_string_array("tokenizer.ggml.merges")->size(), 3839u);
  EXPECT_EQ(file->get_string_array("tokenizer.ggml.merges")->front(), "\xC4\xA0 t");  // "Ġ t"
  std::optional<std::vector<int64_t>> token_types =
      file->get_int_array("tokenizer.ggml.token_type");
  ASSERT_TRUE(token_types.has_value());
  EXPECT_EQ((*token_types)[0], 3);  // control token
  EXPECT_EQ((*token_types)[1], 1);  // normal token

  const WeightIndex& weights = file->weights();
  EXPECT_EQ(weights.tensors().size(), 63u);
  EXPECT_EQ(file->tensor_names().front(), "output.weight");
  // ggml ne = [256, 192, 8] (hidden innermost), flipped to [expert, ff, hidden].
  const TensorInfo* gate_experts = weights.find("blk.0.ffn_gate_exps.weight");
  ASSERT_NE(gate_experts, nullptr);
  EXPECT_EQ(gate_experts->view.dtype, DType::Q8_0);
  EXPECT_EQ(gate_experts->view.shape, (Shape{8, 192, 256}));
  EXPECT_EQ(gate_experts->bytes, 8 * 192 * 256 / 32 * 34);
  EXPECT_EQ(weights.find("blk.0.ffn_down_exps.weight")->view.shape, (Shape{8, 256, 192}));
  EXPECT_EQ(weights.find("token_embd.weight")->view.shape, (Shape{4096, 256}));
  EXPECT_EQ(weights.find("blk.5.attn_norm.weight")->view.dtype, DType::F32);
  // Data starts at the aligned end of the 133568-byte header; the expert tensor's offset is
  // 2228224.
  EXPECT_EQ(gate_experts->file_offset, 133568 + 2228224);
  EXPECT_EQ(gate_experts->file, path);
  std::vector<uint8_t> from_disk(64);
  ASSERT_EQ(::pread(weights.files()[0]->fd(), from_disk.data(), 64, gate_experts->file_offset), 64);
  EXPECT_EQ(std::memcmp(from_disk.data(), gate_experts->view.data, 64), 0);
}

// The router is stored as F32 by llama.cpp, converted from our bf16 checkpoint: every value must
// be the bf16 value exactly. This checks shape flip, offsets and data placement end to end.
TEST(Gguf, RouterMatchesSafetensorsCheckpoint) {
  MOENAV_REQUIRE_SHARED(kMixtralGguf);
  Expected<GgufFile> file = GgufFile::open(testing::shared_path(kMixtralGguf));
  ASSERT_TRUE(file.ok()) << file.error();
  Expected<WeightIndex> checkpoint =
      read_safetensors_dir(testing::source_path("models/tiny-mixtral"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.error();
  for (int layer : {0, 5}) {
    const TensorInfo* router =
        file->weights().find(fmt::format("blk.{}.ffn_gate_inp.weight", layer));
    const TensorInfo* reference =
        checkpoint->find(fmt::format("model.layers.{}.block_sparse_moe.gate.weight", layer));
    ASSERT_TRUE(router && reference);
    ASSERT_EQ(router->view.dtype, DType::F32);
    ASSERT_EQ(router->view.shape, reference->view.shape);
    const auto* router_data = static_cast<const float*>(router->view.data);
    const auto* reference_data = static_cast<const uint8_t*>(reference->view.data);
    for (int64_t i = 0; i < router->view.shape.elements(); ++i) {
      ASSERT_EQ(router_data[i], bf16_to_float(reference_data + 2 * i))
          << "layer " << layer << " element " << i;
    }
  }
}

TEST(Gguf, ReadsTinyQwen3MoeFromLlamaCpp) {
  MOENAV_REQUIRE_SHARED(kQwenGguf);
  Expected<GgufFile> file = GgufFile::open(testing::shared_path(kQwenGguf));
  ASSERT_TRUE(file.ok()) << file.error();
  EXPECT_EQ(file->get_string("general.architecture"), "qwen3moe");
  EXPECT_EQ(file->get_int("qwen3moe.expert_count"), 16);
  EXPECT_EQ(file->get_int("qwen3moe.expert_used_count"), 4);
  EXPECT_EQ(file->get_int("qwen3moe.expert_feed_forward_length"), 96);
  EXPECT_EQ(file->weights().tensors().size(), 51u);
  EXPECT_EQ(file->get_string_array("tokenizer.ggml.tokens")->size(), 4096u);
  const TensorInfo* up_experts = file->weights().find("blk.3.ffn_up_exps.weight");
  ASSERT_NE(up_experts, nullptr);
  EXPECT_EQ(up_experts->view.dtype, DType::Q8_0);
  EXPECT_EQ(up_experts->view.shape, (Shape{16, 96, 192}));
  EXPECT_EQ(file->weights().find("blk.0.attn_k_norm.weight")->view.shape, (Shape{32}));
}

TEST(Gguf, TruncatedRealFile) {
  MOENAV_REQUIRE_SHARED(kQwenGguf);
  const std::string bytes = read_bytes(testing::shared_path(kQwenGguf));
  TempDir dir;
  const std::string path = dir.file("cut.gguf");
  // Inside the token strings, inside the tensor infos, inside the last tensor.
  for (size_t cut : {size_t{2000}, size_t{132000}, bytes.size() - 1}) {
    write_bytes(path, bytes.substr(0, cut));
    expect_open_error(path, {});
  }
}

// Every metadata type, nested arrays, and tensors whose sizes need padding.
struct RoundTripData {
  std::vector<float> matrix = std::vector<float>(15, 0.5f);        // F32 [3, 5]
  std::vector<uint8_t> blocks = std::vector<uint8_t>(2 * 2 * 34);  // Q8_0 [2, 64]
  std::vector<uint16_t> odd = std::vector<uint16_t>(7, 0x3F80);    // BF16 [7]: 14 bytes
  RoundTripData() {
    for (size_t i = 0; i < blocks.size(); ++i) blocks[i] = static_cast<uint8_t>(i * 7);
  }
};

GgufValue make_value(GgufType type,
                     std::variant<uint64_t, int64_t, double, bool, std::string> held) {
  GgufValue value;
  value.type = type;
  std::visit([&](auto&& item) { value.value = item; }, held);
  return value;
}

GgufValue make_array(GgufType element_type, std::vector<GgufValue> elements) {
  GgufValue value;
  value.type = GgufType::Array;
  value.element_type = element_type;
  value.value = std::make_shared<GgufArray>(std::move(elements));
  return value;
}

void fill_writer(GgufWriter& writer, const RoundTripData& data) {
  writer.set_string("general.architecture", "llama");
  writer.set_uint32("llama.block_count", 2);
  writer.set_int32("test.int32", -5);
  writer.set_float32("test.float32", 0.25f);
  writer.set_bool("test.bool", true);
  writer.set_value("test.uint8", make_value(GgufType::Uint8, uint64_t{255}));
  writer.set_value("test.int8", make_value(GgufType::Int8, int64_t{-128}));
  writer.set_value("test.uint16", make_value(GgufType::Uint16, uint64_t{65535}));
  writer.set_value("test.int16", make_value(GgufType::Int16, int64_t{-3}));
  writer.set_value("test.uint64", make_value(GgufType::Uint64, uint64_t{1} << 63));
  writer.set_value("test.int64", make_value(GgufType::Int64, int64_t{-1} << 40));
  writer.set_value("test.float64", make_value(GgufType::Float64, 1.0 / 3.0));
  writer.set_string_array("tokenizer.ggml.tokens",
                          {"<s>", "", "\xC4\xA0the", std::string(1, '\0')});
  writer.set_float32_array("test.scores", {0.5f, -1.0f});
  writer.set_int32_array("test.empty", {});
  writer.set_value(
      "test.nested",
      make_array(GgufType::Array,
                 {make_array(GgufType::Int32, {make_value(GgufType::Int32, int64_t{1})}),
                  make_array(GgufType::String, {make_value(GgufType::String, std::string("x"))})}));
  writer.add_tensor("matrix", DType::F32, {3, 5}, data.matrix.data());
  writer.add_tensor("blocks", DType::Q8_0, {2, 64}, data.blocks.data());
  writer.add_tensor("odd", DType::BF16, {7}, data.odd.data());
}

TEST(GgufWriter, RoundTrip) {
  TempDir dir;
  RoundTripData data;
  GgufWriter writer;
  fill_writer(writer, data);
  writer.set_uint32("llama.block_count", 3);  // replaces in place, keeps the key's position
  const std::string path = dir.file("round.gguf");
  Status written = writer.write(path);
  ASSERT_TRUE(written.ok()) << written.message();

  Expected<GgufFile> file = GgufFile::open(path);
  ASSERT_TRUE(file.ok()) << file.error();
  EXPECT_EQ(file->version(), 3u);
  const std::vector<std::string> expected_keys = {"general.architecture",
                                                  "llama.block_count",
                                                  "test.int32",
                                                  "test.float32",
                                                  "test.bool",
                                                  "test.uint8",
                                                  "test.int8",
                                                  "test.uint16",
                                                  "test.int16",
                                                  "test.uint64",
                                                  "test.int64",
                                                  "test.float64",
                                                  "tokenizer.ggml.tokens",
                                                  "test.scores",
                                                  "test.empty",
                                                  "test.nested"};
  EXPECT_EQ(file->metadata_keys(), expected_keys);
  EXPECT_EQ(file->get_int("llama.block_count"), 3);
  EXPECT_EQ(file->get_int("test.int32"), -5);
  EXPECT_EQ(file->get_float("test.float32"), 0.25);
  EXPECT_EQ(file->get_bool("test.bool"), true);
  EXPECT_EQ(file->get_int("test.uint8"), 255);
  EXPECT_EQ(file->get_int("test.int8"), -128);
  EXPECT_EQ(file->get_int("test.uint16"), 65535);
  EXPECT_FALSE(file->get_int("test.uint64").has_value());  // 2^63 does not fit int64
  EXPECT_EQ(std::get<uint64_t>(file->metadata().at("test.uint64").value), uint64_t{1} << 63);
  EXPECT_EQ(file->get_int("test.int64"), int64_t{-1} << 40);
  EXPECT_EQ(file->get_float("test.float64"), 1.0 / 3.0);
  EXPECT_EQ(file->get_string_array("tokenizer.ggml.tokens"),
            (std::vector<std::string>{"<s>", "", "\xC4\xA0the", std::string(1, '\0')}));
  EXPECT_EQ(gguf_value_to_string(file->metadata().at("tokenizer.ggml.tokens")),
            "[4 x string: \"<s>\", \"\", \"\xC4\xA0the\", \"\\x00\"]");  // escaped: one line
  EXPECT_EQ(file->get_float_array("test.scores"), (std::vector<double>{0.5, -1.0}));
  EXPECT_FALSE(file->get_int_array("test.scores").has_value());
  EXPECT_EQ(file->get_int_array("test.empty"), std::vector<int64_t>{});
  EXPECT_EQ(gguf_value_to_string(file->metadata().at("test.nested")),
            "[2 x array: [1 x int32: 1], [1 x string: \"x\"]]");
  EXPECT_EQ(file->metadata().at("test.uint16").type, GgufType::Uint16);

  EXPECT_EQ(file->tensor_names(), (std::vector<std::string>{"matrix", "blocks", "odd"}));
  const WeightIndex& weights = file->weights();
  const std::vector<std::pair<const char*, const void*>> expected_data = {
      {"matrix", data.matrix.data()}, {"blocks", data.blocks.data()}, {"odd", data.odd.data()}};
  for (const auto& [name, bytes] : expected_data) {
    const TensorInfo* info = weights.find(name);
    ASSERT_NE(info, nullptr) << name;
    EXPECT_EQ(info->file_offset % 32, 0) << name;
    EXPECT_EQ(std::memcmp(info->view.data, bytes, static_cast<size_t>(info->bytes)), 0) << name;
  }
  EXPECT_EQ(weights.find("matrix")->view.shape, (Shape{3, 5}));
  EXPECT_EQ(weights.find("blocks")->view.dtype, DType::Q8_0);
  EXPECT_EQ(weights.find("blocks")->view.shape, (Shape{2, 64}));
  EXPECT_EQ(weights.find("odd")->bytes, 14);

  // Copying every key and tensor of the file we read gives the same bytes.
  GgufWriter copy;
  for (const std::string& key : file->metadata_keys())
    copy.set_value(key, file->metadata().at(key));
  for (const std::string& name : file->tensor_names()) {
    const TensorInfo* info = weights.find(name);
    copy.add_tensor(name, info->view.dtype, info->view.shape, info->view.data);
  }
  ASSERT_TRUE(copy.write(dir.file("copy.gguf")).ok());
  EXPECT_EQ(read_bytes(dir.file("copy.gguf")), read_bytes(path));
}

// A 150k-entry vocabulary (Qwen-size) parses correctly; the time is printed, not asserted.
TEST(GgufWriter, LargeStringArray) {
  TempDir dir;
  std::vector<std::string> tokens(150000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = fmt::format("token{}", i);
  GgufWriter writer;
  writer.set_string_array("tokenizer.ggml.tokens", tokens);
  ASSERT_TRUE(writer.write(dir.file("vocab.gguf")).ok());
  auto start = std::chrono::steady_clock::now();
  Expected<GgufFile> file = GgufFile::open(dir.file("vocab.gguf"));
  auto elapsed =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start);
  ASSERT_TRUE(file.ok()) << file.error();
  std::printf("parsed %zu tokens in %.1f ms\n", tokens.size(), elapsed.count());
  EXPECT_EQ(file->get_string_array("tokenizer.ggml.tokens"), tokens);
}

TEST(GgufWriter, RejectsBadInput) {
  TempDir dir;
  const std::string path = dir.file("bad.gguf");
  std::vector<uint8_t> bytes(1024);
  auto expect_write_error = [&](GgufWriter& writer, const std::string& part) {
    Status status = writer.write(path);
    ASSERT_FALSE(status.ok()) << part;
    EXPECT_EQ(status.message().rfind(path + ": ", 0), 0u) << status.message();
    EXPECT_NE(status.message().find(part), std::string::npos) << status.message();
    EXPECT_FALSE(fs::exists(path));
  };
  GgufWriter partial_block;
  partial_block.add_tensor("w", DType::Q8_0, {2, 33}, bytes.data());
  expect_write_error(partial_block, "q8_0 [2, 33] cannot be stored");
  GgufWriter twice;
  twice.add_tensor("w", DType::F32, {2}, bytes.data());
  twice.add_tensor("w", DType::F32, {2}, bytes.data());
  expect_write_error(twice, "given twice");
  GgufWriter alignment;
  alignment.set_uint32("general.alignment", 24);
  expect_write_error(alignment, "power of two");
  GgufWriter narrow;
  narrow.set_value("x", make_value(GgufType::Uint8, uint64_t{256}));
  expect_write_error(narrow, "256 does not fit in uint8");
  GgufWriter mixed;
  mixed.set_value("x",
                  make_array(GgufType::Int32, {make_value(GgufType::String, std::string("a"))}));
  expect_write_error(mixed, "element 0 is string in an array of int32");
}

TEST(GgufWriter, HonoursAlignmentKey) {
  TempDir dir;
  std::vector<float> values(3, 1.0f);
  GgufWriter writer;
  writer.set_uint32("general.alignment", 64);
  writer.add_tensor("a", DType::F32, {3}, values.data());
  writer.add_tensor("b", DType::F32, {3}, values.data());
  ASSERT_TRUE(writer.write(dir.file("a64.gguf")).ok());
  Expected<GgufFile> file = GgufFile::open(dir.file("a64.gguf"));
  ASSERT_TRUE(file.ok()) << file.error();
  EXPECT_EQ(file->alignment(), 64);
  EXPECT_EQ(file->weights().find("a")->file_offset % 64, 0);
  EXPECT_EQ(file->weights().find("b")->file_offset - file->weights().find("a")->file_offset, 64);
}

// A small valid file whose fields the corruption tests patch: a token array, a Q8_0 tensor
// [4, 64] (272 bytes, padded to 288) and an F32 tensor [64] that ends the file.
class GgufCorruption : public ::testing::Test {
 protected:
  void SetUp() override {
    GgufWriter writer;
    writer.set_string("general.architecture", "llama");
    writer.set_string_array("tokenizer.ggml.tokens", {"a", "bb", "ccc"});
    writer.set_uint32("llama.block_count", 2);
    writer.add_tensor("token_embd.weight", DType::Q8_0, {4, 64}, blocks_.data());
    writer.add_tensor("blk.0.attn_norm.weight", DType::F32, {64}, norm_.data());
    ASSERT_TRUE(writer.write(dir_.file("good.gguf")).ok());
    good_ = read_bytes(dir_.file("good.gguf"));
    path_ = dir_.file("bad.gguf");
    ASSERT_TRUE(GgufFile::open(dir_.file("good.gguf")).ok());
  }
  void expect_error(const std::string& bytes, std::initializer_list<std::string> parts) {
    write_bytes(path_, bytes);
    expect_open_error(path_, parts);
  }
  // Field positions of the F32 tensor's info: n_dims, ne[0], type, offset.
  size_t norm_info() const { return after(good_, "blk.0.attn_norm.weight"); }

  TempDir dir_;
  std::vector<uint8_t> blocks_ = std::vector<uint8_t>(4 * 2 * 34, 1);
  std::vector<float> norm_ = std::vector<float>(64, 1.0f);
  std::string good_;
  std::string path_;
};

TEST_F(GgufCorruption, BadMagicAndVersion) {
  std::string bytes = good_;
  bytes.replace(0, 4, "GGML");
  expect_error(bytes, {"not a GGUF file (starts with 'GGML', expected 'GGUF')"});
  bytes = good_;
  patch<uint32_t>(bytes, 4, 1);
  expect_error(bytes, {"version 1 is not supported"});
  patch<uint32_t>(bytes, 4, 7);
  expect_error(bytes, {"GGUF version 7 is not supported"});
  patch<uint32_t>(bytes, 4, 0x03000000);
  expect_error(bytes, {"big-endian"});
  expect_error("", {"file is empty"});
}

TEST_F(GgufCorruption, TruncatedAnywhere) {
  // The file ends with the last tensor's data, so every shorter prefix is invalid.
  for (size_t cut = 1; cut < good_.size(); cut += (cut < 300 ? 1 : 13)) {
    SCOPED_TRACE(cut);
    expect_error(good_.substr(0, cut), {});
  }
  expect_error(good_.substr(0, 10), {"truncated: tensor count at byte 8"});
}

TEST_F(GgufCorruption, HugeCounts) {
  std::string bytes = good_;
  patch<uint64_t>(bytes, after(good_, "general.architecture") - 20 - 8, uint64_t{1} << 62);
  expect_error(bytes, {"metadata key #0 at byte 24 has length 4611686018427387904, more than the"});
  bytes = good_;
  patch<uint64_t>(bytes, after(good_, "tokenizer.ggml.tokens") + 8, uint64_t{1} << 61);
  expect_error(bytes, {"metadata 'tokenizer.ggml.tokens': array of 2305843009213693952 string "
                       "elements"});
  bytes = good_;
  // The first token "a" is stored as length 1 and one byte; the next length belongs to "bb".
  patch<uint64_t>(bytes,
                  after(good_, std::string("\x01\0\0\0\0\0\0\0"
                                           "a",
                                           9)),
                  1000000);
  expect_error(bytes,
               {"metadata 'tokenizer.ggml.tokens': element 1: string value", "has length 1000000"});
  bytes = good_;
  patch<uint64_t>(bytes, 8, uint64_t{1} << 40);
  expect_error(bytes, {"header claims 3 metadata entries and 1099511627776 tensors"});
  bytes = good_;
  patch<uint64_t>(bytes, 16, ~uint64_t{0});
  expect_error(bytes, {"corrupt header"});
}

TEST_F(GgufCorruption, BadValueTypes) {
  std::string bytes = good_;
  patch<uint32_t>(bytes, after(good_, "llama.block_count"), 13);
  expect_error(bytes, {"metadata 'llama.block_count': unknown value type 13"});
  bytes = good_;
  patch<uint32_t>(bytes, after(good_, "tokenizer.ggml.tokens") + 4, 77);
  expect_error(bytes, {"array of unknown element type 77"});
}

TEST_F(GgufCorruption, DuplicateNames) {
  std::vector<float> values(8, 2.0f);
  GgufWriter writer;
  writer.set_uint32("key.a", 1);
  writer.set_uint32("key.b", 2);
  writer.add_tensor("t.a", DType::F32, {8}, values.data());
  writer.add_tensor("t.b", DType::F32, {8}, values.data());
  ASSERT_TRUE(writer.write(path_).ok());
  const std::string original = read_bytes(path_);
  std::string bytes = original;
  bytes.replace(bytes.find("key.b"), 5, "key.a");
  expect_error(bytes, {"metadata 'key.a': the key appears twice"});
  bytes = original;
  bytes.replace(bytes.find("t.b"), 3, "t.a");
  expect_error(bytes, {"tensor 't.a' appears twice"});
}

TEST_F(GgufCorruption, BadTensorInfos) {
  std::string bytes = good_;
  const size_t info = norm_info();
  patch<uint32_t>(bytes, info + 4 + 8, 99);
  expect_error(bytes, {"tensor 'blk.0.attn_norm.weight': ggml type 99 (unknown) is not supported"});
  patch<uint32_t>(bytes, info + 4 + 8, 3);
  expect_error(bytes, {"ggml type 3 (q4_1) is not supported"});
  bytes = good_;
  patch<uint32_t>(bytes, info, 5);
  expect_error(bytes, {"tensor 'blk.0.attn_norm.weight': 5 dimensions (at most 4 supported)"});
  bytes = good_;
  patch<uint64_t>(bytes, info + 4 + 8 + 4, 8);
  expect_error(bytes, {"data offset 8 is not a multiple of the alignment 32"});
  patch<uint64_t>(bytes, info + 4 + 8 + 4, 320);
  expect_error(bytes,
               {"256 bytes at data offset 320 run past the end of the file (544 bytes of data"});
  patch<uint64_t>(bytes, info + 4 + 8 + 4, 256);  // inside token_embd's 272 bytes
  expect_error(bytes, {"tensor 'blk.0.attn_norm.weight' (data offset 256) overlaps tensor "
                       "'token_embd.weight' (272 bytes at 0)"});
  bytes = good_;
  patch<uint64_t>(bytes, info + 4, uint64_t{1} << 63);
  expect_error(bytes, {"overflows"});
  bytes = good_;
  const size_t embd = after(good_, "token_embd.weight");
  patch<uint64_t>(bytes, embd + 4, 33);  // ne[0] of the Q8_0 tensor
  expect_error(bytes, {"tensor 'token_embd.weight': q8_0 [4, 33]: rows of 33 elements are not a "
                       "whole number of 32-element blocks"});
}

TEST_F(GgufCorruption, BadAlignment) {
  GgufWriter writer;
  writer.set_value("general.alignment", make_value(GgufType::Uint32, uint64_t{24}));
  writer.set_string("a", "b");
  std::string bytes;
  ASSERT_FALSE(writer.write(path_).ok());  // the writer refuses; craft it from a valid one
  writer.set_value("general.alignment", make_value(GgufType::Uint32, uint64_t{16}));
  ASSERT_TRUE(writer.write(path_).ok());
  bytes = read_bytes(path_);
  patch<uint32_t>(bytes, after(bytes, "general.alignment") + 4, 24);
  expect_error(bytes, {"metadata 'general.alignment' is 24, expected a power of two"});
}

TEST_F(GgufCorruption, ArraysNestedTooDeep) {
  std::string bytes;
  auto put32 = [&](uint32_t value) { bytes.append(reinterpret_cast<const char*>(&value), 4); };
  auto put64 = [&](uint64_t value) { bytes.append(reinterpret_cast<const char*>(&value), 8); };
  bytes = "GGUF";
  put32(3);
  put64(0);
  put64(1);
  put64(4);
  bytes += "deep";
  put32(9);
  for (int i = 0; i < 40; ++i) {
    put32(9);
    put64(1);
  }
  put32(4);
  put64(0);
  expect_error(bytes, {"metadata 'deep'", "arrays nested more than 8 deep"});
}

// Random byte changes and cuts must never crash or read outside the mapping (run the asan preset
// to check the latter); each result is a success or a one-line error.
TEST_F(GgufCorruption, RandomCorruptionNeverCrashes) {
  const size_t header_end = good_.size() - 544;
  std::mt19937 random(42);
  int failures = 0;
  for (int iteration = 0; iteration < 500; ++iteration) {
    std::string bytes = good_;
    if (iteration % 5 == 4) {
      bytes.resize(std::uniform_int_distribution<size_t>(0, bytes.size())(random));
    } else {
      for (int i = 0; i <= iteration % 3; ++i) {
        size_t at = std::uniform_int_distribution<size_t>(0, header_end - 1)(random);
        bytes[at] = static_cast<char>(std::uniform_int_distribution<int>(0, 255)(random));
      }
    }
    write_bytes(path_, bytes);
    Expected<GgufFile> file = GgufFile::open(path_);
    if (!file.ok()) {
      ++failures;
      EXPECT_EQ(file.error().rfind(path_ + ": ", 0), 0u) << file.error();
      EXPECT_EQ(file.error().find('\n'), std::string::npos) << file.error();
      continue;
    }
    for (const auto& [name, info] : file->weights().tensors()) {
      EXPECT_LE(info.file_offset + info.bytes, static_cast<int64_t>(bytes.size())) << name;
    }
  }
  EXPECT_GT(failures, 100);
}

}  // namespace
}  // namespace moenav
