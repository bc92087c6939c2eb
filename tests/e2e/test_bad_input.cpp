// Bad input through the real CLI: each broken model gives a one-line error that names the file
// and the problem, a non-zero exit, and no crash.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "test_paths.h"

namespace moenav::testing {
namespace {

namespace fs = std::filesystem;

struct RunResult {
  int exit_code = -1;
  bool crashed = false;
  std::string stderr_text;
};

RunResult run_cli(const std::string& arguments) {
  // ctest runs tests in parallel processes: one stderr file per test.
  const std::string stderr_file = (fs::temp_directory_path() / ("moenav_stderr_" +
      std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + ".txt")).string();
  const std::string command = moenav_binary() + " " + arguments + " >/dev/null 2>" + stderr_file;
  const int status = std::system(command.c_str());
  RunResult result;
  result.crashed = WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) >= 128);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream stream(stderr_file);
  result.stderr_text.assign(std::istreambuf_iterator<char>(stream), std::istreambuf_iterator<char>());
  return result;
}

// A scratch copy of the embedded model whose files a test can break one at a time.
class BrokenModel : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = fs::temp_directory_path() / ("moenav_broken_" + std::string(
        ::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(directory_);
    fs::create_directories(directory_);
    for (const char* file : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}) {
      fs::copy_file(source_path(std::string("models/tiny-mixtral/") + file), directory_ / file);
    }
  }
  void TearDown() override { fs::remove_all(directory_); }

  void replace_in_config(const std::string& from, const std::string& to) {
    std::ifstream in(directory_ / "config.json");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    std::ofstream(directory_ / "config.json") << text;
  }

  RunResult generate() { return run_cli("generate " + directory_.string() + " -p hello -n 4"); }

  static void expect_clean_error(const RunResult& result, const std::string& file, const std::string& problem) {
    EXPECT_FALSE(result.crashed) << result.stderr_text;
    EXPECT_EQ(result.exit_code, 1) << result.stderr_text;
    EXPECT_EQ(std::count(result.stderr_text.begin(), result.stderr_text.end(), '\n'), 1) << result.stderr_text;
    EXPECT_NE(result.stderr_text.find("moenav: error:"), std::string::npos) << result.stderr_text;
    EXPECT_NE(result.stderr_text.find(file), std::string::npos) << result.stderr_text;
    EXPECT_NE(result.stderr_text.find(problem), std::string::npos) << result.stderr_text;
  }

  fs::path directory_;
};

TEST_F(BrokenModel, TruncatedSafetensors) {
  fs::resize_file(directory_ / "model.safetensors", fs::file_size(directory_ / "model.safetensors") / 2);
  expect_clean_error(generate(), "model.safetensors", "past the end");
}

TEST_F(BrokenModel, CorruptedSafetensorsHeader) {
  std::fstream file(directory_ / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
  file.seekp(20);
  file.write("#####", 5);
  file.close();
  expect_clean_error(generate(), "model.safetensors", "JSON");
}

TEST_F(BrokenModel, WrongShapes) {
  replace_in_config("\"num_local_experts\": 8", "\"num_local_experts\": 16");
  expect_clean_error(generate(), "model.safetensors", "expected [16, 256]");
}

TEST_F(BrokenModel, UnknownArchitecture) {
  replace_in_config("\"model_type\": \"mixtral\"", "\"model_type\": \"llama4_moe\"");
  const RunResult result = generate();
  expect_clean_error(result, "config.json", "unknown architecture");
  EXPECT_NE(result.stderr_text.find("supported: mixtral"), std::string::npos) << result.stderr_text;
}

TEST_F(BrokenModel, InvalidConfigJson) {
  std::ofstream(directory_ / "config.json") << "{\"model_type\": \"mixtral\", ";
  expect_clean_error(generate(), "config.json", "not a valid JSON");
}

TEST_F(BrokenModel, MissingTokenizer) {
  fs::remove(directory_ / "tokenizer.json");
  expect_clean_error(generate(), directory_.string(), "tokenizer.json is missing");
}

TEST(BadInput, TruncatedGguf) {
  MOENAV_REQUIRE_SHARED("models/tiny-mixtral/llama.cpp/tiny-mixtral-q8_0.gguf");
  const fs::path copy = fs::temp_directory_path() / "moenav_truncated.gguf";
  fs::copy_file(shared_path("models/tiny-mixtral/llama.cpp/tiny-mixtral-q8_0.gguf"), copy,
                fs::copy_options::overwrite_existing);
  fs::resize_file(copy, fs::file_size(copy) - 1000);
  const RunResult result = run_cli("generate " + copy.string() + " -p hello -n 4");
  EXPECT_FALSE(result.crashed);
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.stderr_text.find("moenav_truncated.gguf"), std::string::npos) << result.stderr_text;
  EXPECT_EQ(std::count(result.stderr_text.begin(), result.stderr_text.end(), '\n'), 1) << result.stderr_text;
  fs::remove(copy);
}

TEST(BadInput, MissingModelPath) {
  const RunResult result = run_cli("generate /nonexistent/model -p hello");
  EXPECT_FALSE(result.crashed);
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.stderr_text.find("/nonexistent/model: no such file or directory"), std::string::npos)
      << result.stderr_text;
}

TEST(BadInput, BadConfigOption) {
  const RunResult result = run_cli("generate " + source_path("models/tiny-mixtral") + " -p hi --cache-policy fifo");
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.stderr_text.find("unknown value \"fifo\""), std::string::npos) << result.stderr_text;
}

// A KV cache type no backend holds is refused by name, not silently stored as f32.
TEST(BadInput, UnknownKvCacheTypeIsRefused) {
  const RunResult result = run_cli("generate " + source_path("models/tiny-mixtral") + " -p hi --kv-type q8_0");
  EXPECT_FALSE(result.crashed);
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.stderr_text.find("unknown value \"q8_0\""), std::string::npos) << result.stderr_text;
}

}  // namespace
}  // namespace moenav::testing
