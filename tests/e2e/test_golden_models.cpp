// The trained tiny models (bf16 safetensors) against transformers: logits within 1e-3 with the
// same argmax everywhere, and the greedy continuations of reference.json's prompts.
#include "golden.h"

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
