// The trained tiny models (bf16 safetensors) against transformers: logits within 1e-3 with the
// same argmax everywhere, and the greedy continuations of reference.json's prompts.
#include <cstdio>

#include "golden.h"
#include "tokenizer/tokenizer.h"

namespace moenav::testing {
namespace {

struct ModelCase {
  const char* name;
  std::string directory;
};

std::string model_directory(const std::string& name) {
  const std::string embedded = source_path("models/" + name);
  return std::filesystem::exists(embedded + "/model.safetensors") ? embedded
                                                                  : shared_path("models/" + name);
}

class GoldenModel : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    directory_ = model_directory(GetParam());
    if (!std::filesystem::exists(directory_ + "/model.safetensors")) {
      GTEST_SKIP() << "needs ../shared/models/" << GetParam() << " (not present in this checkout)";
    }
  }
  std::string directory_;
};

TEST_P(GoldenModel, LogitsMatchTransformers) {
  auto engine = open_engine(directory_);
  ASSERT_TRUE(engine);
  const LogitsComparison result = compare_logits(*engine, directory_ + "/reference_logits.safetensors");
  EXPECT_EQ(result.positions, 128);
  EXPECT_LE(result.max_abs_diff, 1e-3);
  EXPECT_EQ(result.argmax_mismatches, 0);
}

// An f16 KV cache rounds each cached element to 11 significant bits; the logits stay close to
// the reference (the f32 cache's 1e-3 does not apply) and the greedy argmax holds.
TEST_P(GoldenModel, HalfKvCacheStaysCloseToTransformers) {
  EngineConfig config;
  config.kv_cache.type = "f16";
  auto engine = open_engine(directory_, config);
  ASSERT_TRUE(engine);
  const LogitsComparison result = compare_logits(*engine, directory_ + "/reference_logits.safetensors");
  EXPECT_EQ(result.positions, 128);
  EXPECT_LE(result.max_abs_diff, 2e-2);
  EXPECT_EQ(result.argmax_mismatches, 0);
  std::printf("f16 KV cache: max |logit difference| %.3g, %lld argmax mismatches\n",
              result.max_abs_diff, static_cast<long long>(result.argmax_mismatches));
}

TEST_P(GoldenModel, GreedyContinuationsMatchTransformers) {
  auto engine = open_engine(directory_);
  ASSERT_TRUE(engine);
  const nlohmann::json reference = read_json(directory_ + "/reference.json");
  ASSERT_EQ(reference["greedy"].size(), 3u);
  for (const auto& entry : reference["greedy"]) {
    const auto prompt = entry["prompt_ids"].get<std::vector<int32_t>>();
    const auto expected = entry["greedy_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(greedy(*engine, prompt, expected.size()), expected) << entry["prompt"];
  }
}

INSTANTIATE_TEST_SUITE_P(Models, GoldenModel, ::testing::Values("tiny-mixtral", "tiny-qwen3-moe"));

}  // namespace
}  // namespace moenav::testing

namespace moenav::testing {
namespace {

// The `logits` command end to end: ids in, float32 logits out, equal to transformers'.
TEST(LogitsCommand, WritesReferenceLogits) {
  const std::string model = source_path("models/tiny-mixtral");
  const std::string output = (std::filesystem::temp_directory_path() / "moenav_logits_test.safetensors").string();
  const std::string command = moenav_binary() + " logits " + model + " --input " + model +
                              "/reference_logits.safetensors --out " + output + " 2>/dev/null";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  WeightIndex ours, reference;
  ASSERT_TRUE(read_safetensors_file(output, ours).ok());
  ASSERT_TRUE(read_safetensors_file(model + "/reference_logits.safetensors", reference).ok());
  const TensorView& got = ours.find("logits")->view;
  const TensorView& want = reference.find("logits")->view;
  ASSERT_EQ(got.dtype, DType::F32);
  ASSERT_TRUE(got.shape == want.shape) << got.shape.to_string();
  double max_diff = 0.0;
  for (int64_t i = 0; i < want.shape.elements(); ++i) {
    max_diff = std::max(max_diff, static_cast<double>(std::abs(static_cast<const float*>(got.data)[i] -
                                                               static_cast<const float*>(want.data)[i])));
  }
  EXPECT_LE(max_diff, 1e-3);
  std::filesystem::remove(output);
}

}  // namespace
}  // namespace moenav::testing

namespace moenav::testing {
namespace {

// GGUF files written by llama.cpp's own converter (Q8_0, tokenizer embedded): they load, and
// greedy decoding of " The history of the city" gives the transformers reference ids.
class LlamaCppGguf : public ::testing::TestWithParam<const char*> {};

TEST_P(LlamaCppGguf, GreedyMatchesTransformersReference) {
  const std::string name = GetParam();
  const std::string gguf = "models/" + name + "/llama.cpp/" + name + "-q8_0.gguf";
  MOENAV_REQUIRE_SHARED(gguf);
  auto engine = open_engine(shared_path(gguf));
  ASSERT_TRUE(engine);
  const nlohmann::json reference = read_json(shared_path("models/" + name + "/reference.json"));
  for (const auto& entry : reference["greedy"]) {
    if (entry["prompt"] != " The history of the city") continue;
    const auto prompt = entry["prompt_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(engine->tokenizer().encode(entry["prompt"].get<std::string>()), prompt);
    auto expected = entry["greedy_ids"].get<std::vector<int32_t>>();
    expected.resize(30);
    EXPECT_EQ(greedy(*engine, prompt, expected.size()), expected);
    return;
  }
  FAIL() << "reference.json has no greedy entry for the prompt";
}

INSTANTIATE_TEST_SUITE_P(Models, LlamaCppGguf, ::testing::Values("tiny-mixtral", "tiny-qwen3-moe"));

}  // namespace
}  // namespace moenav::testing
