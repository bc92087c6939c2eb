// `convert` round trips: every golden architecture written as F32 GGUF loads back with the
// logits of the Hugging Face checkpoint; tiny-mixtral as Q8_0 loads and generates, and its
// tokenizer metadata equals what llama.cpp's own converter wrote.
#include <cstdlib>
#include <filesystem>

#include "golden.h"
#include "io/gguf.h"
#include "model/gguf_export.h"
#include "model/model.h"

namespace moenav::testing {
namespace {

std::string temp_gguf(const std::string& stem) {
  return (std::filesystem::temp_directory_path() / ("moenav_convert_" + stem + ".gguf")).string();
}

Status convert(const std::string& directory, const std::string& output, DType type) {
  auto model = load_model(directory);
  if (!model.ok()) return model.status();
  return export_gguf(**model, output, type);
}

// All logits of one prompt through a fresh session.
std::vector<float> prompt_logits(Engine& engine, const std::vector<int32_t>& tokens) {
  auto session = engine.new_session();
  auto logits = engine.evaluate(*session, tokens, /*all_logits=*/true);
  EXPECT_TRUE(logits.ok()) << logits.error();
  return logits.ok() ? *logits : std::vector<float>{};
}

class ConvertArch : public ::testing::TestWithParam<const char*> {};

TEST_P(ConvertArch, F32RoundTripKeepsLogits) {
  const std::string directory = shared_path(std::string("golden/arch/") + GetParam());
  if (!std::filesystem::exists(directory + "/model.safetensors")) {
    GTEST_SKIP() << "needs ../shared/golden/arch/" << GetParam()
                 << " (not present in this checkout)";
  }
  const std::string output = temp_gguf(GetParam());
  const Status written = convert(directory, output, DType::F32);
  ASSERT_TRUE(written.ok()) << written.message();
  auto original = open_engine(directory);
  auto converted = open_engine(output);
  ASSERT_TRUE(original && converted);
  EXPECT_EQ(converted->model().format, "gguf");
  const std::vector<int32_t> tokens =
      read_json(directory + "/reference.json")["prompt_ids"].get<std::vector<int32_t>>();
  const std::vector<float> expected = prompt_logits(*original, tokens);
  const std::vector<float> got = prompt_logits(*converted, tokens);
  ASSERT_EQ(got.size(), expected.size());
  double max_diff = 0.0;
  for (size_t i = 0; i < got.size(); ++i)
    max_diff = std::max(max_diff, static_cast<double>(std::abs(got[i] - expected[i])));
  // Identical, except that Mixtral's GGUF ("llama") permutes q/k rows for interleaved RoPE, which
  // reorders the terms of each q.k dot product.
  if (std::string(GetParam()) == "mixtral") {
    EXPECT_LE(max_diff, 1e-5);
  } else {
    EXPECT_EQ(max_diff, 0.0);
  }
  std::filesystem::remove(output);
}

INSTANTIATE_TEST_SUITE_P(Architectures, ConvertArch,
                         ::testing::Values("mixtral", "qwen2_moe", "qwen3_moe", "olmoe",
                                           "deepseek_v2", "deepseek_v3", "gpt_oss"));

TEST(Convert, TinyMixtralQ8_0LoadsAndGenerates) {
  const std::string directory = source_path("models/tiny-mixtral");
  if (!std::filesystem::exists(directory + "/model.safetensors"))
    GTEST_SKIP() << "no embedded tiny-mixtral";
  const std::string output = temp_gguf("tiny_mixtral_q8_0");
  const Status written = convert(directory, output, DType::Q8_0);
  ASSERT_TRUE(written.ok()) << written.message();
  auto gguf = GgufFile::open(output);
  ASSERT_TRUE(gguf.ok()) << gguf.error();
  EXPECT_EQ(gguf->get_string("general.architecture"), "llama");
  EXPECT_EQ(gguf->weights().find("blk.0.ffn_gate_exps.weight")->view.dtype, DType::Q8_0);
  EXPECT_EQ(gguf->weights().find("blk.0.ffn_gate_inp.weight")->view.dtype, DType::F32);
  // The tokenizer as llama.cpp's converter wrote it for the same model.
  const std::string llama_cpp = shared_path("models/tiny-mixtral/llama.cpp/tiny-mixtral-q8_0.gguf");
  if (std::filesystem::exists(llama_cpp)) {
    auto reference = GgufFile::open(llama_cpp);
    ASSERT_TRUE(reference.ok()) << reference.error();
    for (const char* key : {"tokenizer.ggml.tokens", "tokenizer.ggml.merges"}) {
      EXPECT_EQ(gguf->get_string_array(key), reference->get_string_array(key)) << key;
    }
    EXPECT_EQ(gguf->get_int_array("tokenizer.ggml.token_type"),
              reference->get_int_array("tokenizer.ggml.token_type"));
    EXPECT_EQ(gguf->get_string("tokenizer.ggml.model"),
              reference->get_string("tokenizer.ggml.model"));
  }
  auto engine = open_engine(output);
  ASSERT_TRUE(engine);
  ASSERT_TRUE(engine->has_tokenizer());
  const nlohmann::json reference = read_json(directory + "/reference.json");
  const auto& entry = reference["greedy"][0];
  const auto prompt = entry["prompt_ids"].get<std::vector<int32_t>>();
  const auto expected = entry["greedy_ids"].get<std::vector<int32_t>>();
  const std::vector<int32_t> tokens = greedy(*engine, prompt, expected.size());
  EXPECT_EQ(tokens.size(), expected.size());
  size_t agree = 0;
  while (agree < tokens.size() && tokens[agree] == expected[agree]) ++agree;
  EXPECT_GE(agree, 4u) << "Q8_0 should follow the bf16 continuation for a few tokens";
  std::filesystem::remove(output);
}

TEST(Convert, RejectsUnsupportedType) {
  const std::string directory = shared_path("golden/arch/qwen3_moe");
  if (!std::filesystem::exists(directory + "/model.safetensors"))
    GTEST_SKIP() << "needs ../shared/golden/arch";
  const Status written = convert(directory, temp_gguf("bad_type"), DType::Q4_K);
  ASSERT_FALSE(written.ok());
  EXPECT_NE(written.message().find("q8_0"), std::string::npos) << written.message();
}

}  // namespace
}  // namespace moenav::testing
