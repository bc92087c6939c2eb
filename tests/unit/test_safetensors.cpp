// safetensors reader/writer: the embedded tiny-mixtral checkpoint, a sharded directory built here,
// and corrupted files, each of which must give one line naming the file and the problem.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "io/safetensors.h"
#include "test_paths.h"

namespace moenav {
namespace {

namespace fs = std::filesystem;

// A fresh directory under /tmp per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() / fmt::format("moenav_safetensors_{}_{}_{}", ::getpid(),
                                                    test->test_suite_name(), test->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

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

// A file from a hand-written header: 8-byte length, the header text, `data_bytes` zero bytes.
std::string raw_file(const std::string& header, size_t data_bytes) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(header.size() >> (8 * i));
  return bytes + header + std::string(data_bytes, '\0');
}

// The error must be one line, start with the file's path and contain every `part`.
void expect_error(const Status& status, const std::string& path,
                  std::initializer_list<std::string> parts) {
  ASSERT_FALSE(status.ok()) << "expected an error for " << path;
  const std::string& message = status.message();
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << message;
  for (const std::string& part : parts) EXPECT_NE(message.find(part), std::string::npos) << message;
}

Status read_file(const std::string& path) {
  WeightIndex index;
  return read_safetensors_file(path, index);
}

// Three small tensors: F32 [2, 3], I32 [4], I64 [2, 2, 2].
struct SmallTensors {
  std::vector<float> matrix{1.5f, -2.0f, 3.25f, 0.0f, 1e-8f, 7.0f};
  std::vector<int32_t> vector{1, -2, 3, 2147483647};
  std::vector<int64_t> cube{0, 1, 2, 3, 4, 5, 6, -7};
  std::vector<SafetensorsOutput> outputs() const {
    return {{"matrix", DType::F32, {2, 3}, matrix.data()},
            {"vector", DType::I32, {4}, vector.data()},
            {"cube", DType::I64, {2, 2, 2}, cube.data()}};
  }
};

TEST(Safetensors, LoadsTinyMixtral) {
  Expected<WeightIndex> index = read_safetensors_dir(testing::source_path("models/tiny-mixtral"));
  ASSERT_TRUE(index.ok()) << index.error();
  EXPECT_EQ(index->tensors().size(), 189u);
  ASSERT_EQ(index->files().size(), 1u);

  const TensorInfo* gate = index->find("model.layers.0.block_sparse_moe.gate.weight");
  ASSERT_NE(gate, nullptr);
  EXPECT_EQ(gate->view.dtype, DType::BF16);
  EXPECT_EQ(gate->view.shape, (Shape{8, 256}));
  EXPECT_EQ(gate->bytes, 8 * 256 * 2);
  // The header is 22680 bytes and the tensor's data_offsets begin at 6553600.
  EXPECT_EQ(gate->file_offset, 8 + 22680 + 6553600);
  EXPECT_EQ(gate->file, testing::source_path("models/tiny-mixtral/model.safetensors"));

  // file_offset is what the disk tier preads: it must hold the same bytes as the mapping.
  std::vector<uint8_t> from_disk(static_cast<size_t>(gate->bytes));
  int fd = index->files()[0]->fd();
  ASSERT_EQ(::pread(fd, from_disk.data(), from_disk.size(), gate->file_offset),
            static_cast<ssize_t>(from_disk.size()));
  EXPECT_EQ(std::memcmp(from_disk.data(), gate->view.data, from_disk.size()), 0);

  const TensorInfo* expert = index->find("model.layers.5.block_sparse_moe.experts.7.w2.weight");
  ASSERT_NE(expert, nullptr);
  EXPECT_EQ(expert->view.shape, (Shape{256, 192}));
  EXPECT_EQ(index->find("model.layers.6.self_attn.q_proj.weight"), nullptr);
}

TEST(Safetensors, LoadsReferenceLogits) {
  const std::string path = testing::source_path("models/tiny-mixtral/reference_logits.safetensors");
  WeightIndex index;
  ASSERT_TRUE(read_safetensors_file(path, index).ok());
  ASSERT_EQ(index.tensors().size(), 2u);
  const TensorInfo* ids = index.find("input_ids");
  const TensorInfo* logits = index.find("logits");
  ASSERT_TRUE(ids && logits);
  EXPECT_EQ(ids->view.dtype, DType::I64);
  EXPECT_EQ(ids->view.shape, (Shape{2, 64}));
  EXPECT_EQ(logits->view.dtype, DType::F32);
  EXPECT_EQ(logits->view.shape, (Shape{2, 64, 4096}));
  for (int64_t i = 0; i < ids->view.shape.elements(); ++i) {
    int64_t id = 0;
    std::memcpy(&id, static_cast<const uint8_t*>(ids->view.data) + i * 8, 8);
    ASSERT_TRUE(id >= 0 && id < 4096) << "token " << i << " = " << id;
  }
  float first = 0;
  std::memcpy(&first, logits->view.data, 4);
  EXPECT_TRUE(std::isfinite(first));
}

TEST(Safetensors, WriteReadRoundTrip) {
  TempDir dir;
  const std::string path = dir.file("logits.safetensors");
  SmallTensors small;
  ASSERT_TRUE(write_safetensors(path, small.outputs()).ok());
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  WeightIndex index;
  Status status = read_safetensors_file(path, index);
  ASSERT_TRUE(status.ok()) << status.message();
  ASSERT_EQ(index.tensors().size(), 3u);
  for (const SafetensorsOutput& output : small.outputs()) {
    const TensorInfo* info = index.find(output.name);
    ASSERT_NE(info, nullptr) << output.name;
    EXPECT_EQ(info->view.dtype, output.dtype);
    EXPECT_EQ(info->view.shape, output.shape);
    EXPECT_EQ(info->file_offset % 8, 0) << "data section must start 8-byte aligned";
    EXPECT_EQ(std::memcmp(info->view.data, output.data, static_cast<size_t>(info->bytes)), 0);
  }
}

TEST(Safetensors, WriteRejectsBadInput) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  std::vector<uint8_t> blocks(34);
  expect_error(write_safetensors(path, {{"q", DType::Q8_0, {32}, blocks.data()}}), path,
               {"cannot be stored in safetensors"});
  float value = 1;
  expect_error(
      write_safetensors(path, {{"x", DType::F32, {1}, &value}, {"x", DType::F32, {1}, &value}}),
      path, {"'x' given twice"});
  EXPECT_FALSE(fs::exists(path));
}

// Two shards and an index, as transformers' save_pretrained(max_shard_size=...) writes them.
class SafetensorsShardedDirectory : public ::testing::Test {
 protected:
  void SetUp() override {
    auto outputs = small_.outputs();
    ASSERT_TRUE(write_safetensors(dir_.file(kShard1), {outputs[0], outputs[1]}).ok());
    ASSERT_TRUE(write_safetensors(dir_.file(kShard2), {outputs[2]}).ok());
  }
  void write_index(const std::string& cube_shard) {
    write_bytes(dir_.file("model.safetensors.index.json"),
                fmt::format(R"({{"metadata": {{"total_size": 136}}, "weight_map": {{
                  "matrix": "{0}", "vector": "{0}", "cube": "{1}"}}}})",
                            kShard1, cube_shard));
  }
  static constexpr const char* kShard1 = "model-00001-of-00002.safetensors";
  static constexpr const char* kShard2 = "model-00002-of-00002.safetensors";
  TempDir dir_;
  SmallTensors small_;
};

TEST_F(SafetensorsShardedDirectory, LoadsAllShards) {
  write_index(kShard2);
  Expected<WeightIndex> index = read_safetensors_dir(dir_.path().string());
  ASSERT_TRUE(index.ok()) << index.error();
  EXPECT_EQ(index->tensors().size(), 3u);
  EXPECT_EQ(index->files().size(), 2u);
  EXPECT_EQ(index->find("cube")->file, dir_.file(kShard2));
  EXPECT_EQ(index->find("vector")->file, dir_.file(kShard1));
  EXPECT_EQ(std::memcmp(index->find("cube")->view.data, small_.cube.data(), 64), 0);
}

TEST_F(SafetensorsShardedDirectory, IndexNamingMissingShard) {
  write_index("model-00003-of-00003.safetensors");
  Expected<WeightIndex> index = read_safetensors_dir(dir_.path().string());
  expect_error(index.status(), dir_.file("model.safetensors.index.json"),
               {"'model-00003-of-00003.safetensors'", "does not exist"});
}

TEST_F(SafetensorsShardedDirectory, IndexNamingWrongShard) {
  write_index(kShard1);  // cube is really in shard 2, which the index no longer names
  Expected<WeightIndex> index = read_safetensors_dir(dir_.path().string());
  expect_error(index.status(), dir_.file("model.safetensors.index.json"),
               {"tensor 'cube'", "was not found"});
}

TEST_F(SafetensorsShardedDirectory, InvalidIndexJson) {
  write_bytes(dir_.file("model.safetensors.index.json"), "{\"weight_map\": {\"cube\": ");
  expect_error(read_safetensors_dir(dir_.path().string()).status(),
               dir_.file("model.safetensors.index.json"), {"not valid JSON"});
}

TEST_F(SafetensorsShardedDirectory, WithoutIndexReadsEveryFile) {
  Expected<WeightIndex> index = read_safetensors_dir(dir_.path().string());
  ASSERT_TRUE(index.ok()) << index.error();
  EXPECT_EQ(index->tensors().size(), 3u);
}

TEST(Safetensors, DirectoryErrors) {
  TempDir dir;
  expect_error(read_safetensors_dir(dir.path().string()).status(), dir.path().string(),
               {"no model.safetensors"});
  expect_error(read_safetensors_dir(dir.file("absent")).status(), dir.file("absent"),
               {"not a directory"});
  expect_error(read_file(dir.file("absent.safetensors")), dir.file("absent.safetensors"),
               {"cannot open: No such file or directory"});
}

TEST(SafetensorsCorruption, Truncated) {
  TempDir dir;
  const std::string good = dir.file("good.safetensors");
  SmallTensors small;
  ASSERT_TRUE(write_safetensors(good, small.outputs()).ok());
  const std::string bytes = read_bytes(good);
  const std::string path = dir.file("cut.safetensors");
  write_bytes(path, "");
  expect_error(read_file(path), path, {"file is empty"});
  write_bytes(path, bytes.substr(0, 5));
  expect_error(read_file(path), path, {"too short"});
  const size_t data_start = bytes.size() - 24 - 16 - 64;
  for (size_t cut : {size_t{8}, size_t{9}, size_t{40}, data_start - 1}) {
    write_bytes(path, bytes.substr(0, cut));
    expect_error(read_file(path), path, {"header length"});
  }
  for (size_t cut : {data_start, data_start + 1, data_start + 30, bytes.size() - 1}) {
    write_bytes(path, bytes.substr(0, cut));
    expect_error(read_file(path), path, {"run past the end of the file"});
  }
}

TEST(SafetensorsCorruption, HeaderLengthLargerThanFile) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  std::string bytes = raw_file("{}", 0);
  bytes[5] = 0x01;  // header length 2^40 + 2
  write_bytes(path, bytes);
  expect_error(read_file(path), path, {"header length 1099511627778 runs past the end"});
}

TEST(SafetensorsCorruption, HeaderErrors) {
  struct Case {
    std::string header;
    size_t data_bytes;
    std::vector<std::string> parts;
  };
  const std::string weight = "model.layers.3.mlp.gate.weight";
  const std::vector<Case> cases = {
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]})", 8, {"not valid JSON"}},
      {R"([1, 2, 3])", 0, {"not a JSON object"}},
      {R"({"x": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}})",
       2,
       {"tensor 'x'", "unknown dtype \"F8_E4M3\""}},
      {R"({")" + weight + R"(": {"dtype": "F32", "shape": [25], "data_offsets": [100, 200]}})",
       150,
       {"tensor '" + weight +
        "': data_offsets [100, 200] run past the end of the file (150 bytes of data)"}},
      {R"({"x": {"dtype": "BF16", "shape": [8, 256], "data_offsets": [0, 4000]}})",
       4096,
       {"tensor 'x'", "hold 4000 bytes, but bf16 [8, 256] is 4096 bytes"}},
      {R"({"x": {"dtype": "F32", "shape": [1, 1, 1, 1, 1], "data_offsets": [0, 4]}})",
       4,
       {"tensor 'x'", "5 dimensions"}},
      {R"({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})",
       4,
       {"'shape' holds -1"}},
      {R"({"x": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}})", 8, {"'shape' is \"2\""}},
      {R"({"x": {"dtype": 7, "shape": [2], "data_offsets": [0, 8]}})", 8, {"'dtype' is 7"}},
      {R"({"x": {"dtype": "F32", "shape": [2]}})", 8, {"tensor 'x'", "no 'data_offsets'"}},
      {R"({"x": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})",
       8,
       {"end before they begin"}},
      {R"({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 9]}})",
       8,
       {"expected [begin, end]"}},
      {R"({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0.5, 8]}})", 8, {"holds 0.5"}},
      {R"({"x": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 8]}})",
       8,
       {"too large"}},
      {R"({"x": "tensor"})", 0, {"tensor 'x': entry is \"tensor\""}},
      {R"({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
           "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
       12,
       {"overlap tensor 'x'"}},
  };
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  for (const Case& test_case : cases) {
    SCOPED_TRACE(test_case.header);
    write_bytes(path, raw_file(test_case.header, test_case.data_bytes));
    WeightIndex index;
    Status status = read_safetensors_file(path, index);
    ASSERT_FALSE(status.ok());
    for (const std::string& part : test_case.parts) {
      EXPECT_NE(status.message().find(part), std::string::npos) << status.message();
    }
    expect_error(status, path, {});
    EXPECT_TRUE(index.tensors().empty());
  }
}

TEST(SafetensorsCorruption, MetadataAndEmptyTensorsAreFine) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  write_bytes(path, raw_file(R"({"__metadata__": {"format": "pt"},
      "empty": {"dtype": "F32", "shape": [0, 4], "data_offsets": [0, 0]},
      "x": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}})",
                             4));
  WeightIndex index;
  Status status = read_safetensors_file(path, index);
  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_EQ(index.tensors().size(), 2u);
  EXPECT_EQ(index.find("empty")->bytes, 0);
}

// Random byte flips and cuts must never crash or read outside the mapping (run under the asan
// preset to check the latter); each result is a success or a one-line error.
TEST(SafetensorsCorruption, RandomCorruptionNeverCrashes) {
  TempDir dir;
  const std::string good = dir.file("good.safetensors");
  SmallTensors small;
  ASSERT_TRUE(write_safetensors(good, small.outputs()).ok());
  const std::string original = read_bytes(good);
  const size_t header_end = original.size() - 24 - 16 - 64;
  const std::string path = dir.file("fuzz.safetensors");
  std::mt19937 random(1234);
  int failures = 0;
  for (int iteration = 0; iteration < 400; ++iteration) {
    std::string bytes = original;
    if (iteration % 4 == 3) {
      bytes.resize(std::uniform_int_distribution<size_t>(0, bytes.size())(random));
    } else {
      const int flips = 1 + iteration % 3;
      for (int i = 0; i < flips; ++i) {
        // Mostly the header: flipped data bytes are valid data.
        size_t at = std::uniform_int_distribution<size_t>(0, header_end + 8)(random) % bytes.size();
        bytes[at] = static_cast<char>(std::uniform_int_distribution<int>(0, 255)(random));
      }
    }
    write_bytes(path, bytes);
    WeightIndex index;
    Status status = read_safetensors_file(path, index);
    if (!status.ok()) {
      ++failures;
      EXPECT_EQ(status.message().rfind(path + ": ", 0), 0u) << status.message();
      EXPECT_EQ(status.message().find('\n'), std::string::npos) << status.message();
    } else {
      for (const auto& [name, info] : index.tensors()) {
        EXPECT_LE(info.file_offset + info.bytes, static_cast<int64_t>(bytes.size())) << name;
      }
    }
  }
  EXPECT_GT(failures, 100);  // the corruption really reaches the parser
}

}  // namespace
}  // namespace moenav
