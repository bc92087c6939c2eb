// Every supported architecture against transformers: random-weight float32 checkpoints in
// ../shared/golden/arch/<arch> (logits for input_ids [2, 24] within 1e-4, 16 greedy tokens),
// plus what only some architectures have: the MLA latent cache (decode equals recompute) and
// the error an unknown architecture gets.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <span>

#include "golden.h"
#include "model/arch/architecture.h"
#include "moenav/engine.h"

namespace moenav::testing {
namespace {

constexpr const char* kArchitectures[] = {"mixtral",     "qwen2_moe",   "qwen3_moe", "olmoe",
                                          "deepseek_v2", "deepseek_v3", "gpt_oss"};

std::string arch_directory(const std::string& arch) { return shared_path("golden/arch/" + arch); }

class GoldenArch : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    directory_ = arch_directory(GetParam());
    if (!std::filesystem::exists(directory_ + "/model.safetensors")) {
      GTEST_SKIP() << "needs ../shared/golden/arch/" << GetParam()
                   << " (not present in this checkout)";
    }
  }
  std::string directory_;
};

TEST_P(GoldenArch, LogitsAndGreedyMatchTransformers) {
  auto engine = open_engine(directory_);
  ASSERT_TRUE(engine);
  const LogitsComparison result =
      compare_logits(*engine, directory_ + "/reference_logits.safetensors");
  std::printf("%-12s max |logit diff| = %.3g\n", GetParam(), result.max_abs_diff);
  EXPECT_EQ(result.positions, 48);
  EXPECT_LE(result.max_abs_diff, 1e-4);
  EXPECT_EQ(result.argmax_mismatches, 0);
  const nlohmann::json reference = read_json(directory_ + "/reference.json");
  const auto expected = reference["greedy_ids"].get<std::vector<int32_t>>();
  EXPECT_EQ(greedy(*engine, reference["prompt_ids"].get<std::vector<int32_t>>(), expected.size()),
            expected);
}

INSTANTIATE_TEST_SUITE_P(Architectures, GoldenArch, ::testing::ValuesIn(kArchitectures));

// Decoding one token at a time through the latent cache gives the logits of one pass over the
// whole sequence, for every position.
TEST(MlaCache, DecodeEqualsFullRecompute) {
  for (const char* arch : {"deepseek_v2", "deepseek_v3"}) {
    const std::string directory = arch_directory(arch);
    if (!std::filesystem::exists(directory + "/model.safetensors"))
      GTEST_SKIP() << "needs ../shared/golden/arch/" << arch;
    auto engine = open_engine(directory);
    ASSERT_TRUE(engine);
    const std::vector<int32_t> tokens = {366, 95,  138, 5,   366, 6, 345, 458,
                                         7,   300, 12,  401, 77,  3, 250, 11};
    auto full_session = engine->new_session();
    auto full = engine->evaluate(*full_session, tokens, /*all_logits=*/true);
    ASSERT_TRUE(full.ok()) << full.error();
    auto session = engine->new_session();
    const int64_t vocab = engine->vocab_size();
    double max_diff = 0.0;
    for (size_t i = 0; i < tokens.size(); ++i) {
      auto step = engine->evaluate(*session, std::span<const int32_t>(&tokens[i], 1));
      ASSERT_TRUE(step.ok()) << step.error();
      for (int64_t v = 0; v < vocab; ++v) {
        max_diff = std::max(max_diff,
                            static_cast<double>(std::abs(
                                (*step)[static_cast<size_t>(v)] -
                                (*full)[i * static_cast<size_t>(vocab) + static_cast<size_t>(v)])));
      }
    }
    EXPECT_LE(max_diff, 1e-5) << arch;
    const ModelConfig& c = engine->model_config();
    std::printf(
        "%s: MLA cache %lld bytes per token per layer (per-head keys and values would take %lld)\n",
        arch, static_cast<long long>(c.kv_cache_width() * 4),
        static_cast<long long>(c.n_heads * (c.qk_nope_dim + c.qk_rope_dim + c.v_head_dim) * 4));
  }
}

TEST(Architectures, UnknownArchitectureListsSupportedOnes) {
  const auto directory = std::filesystem::temp_directory_path() / "moenav_unknown_arch";
  std::filesystem::create_directories(directory);
  std::ofstream(directory / "config.json") << R"({"model_type": "not_a_model", "hidden_size": 8})";
  auto engine = Engine::create(directory.string(), EngineConfig{});
  ASSERT_FALSE(engine.ok());
  const std::string message = engine.error();
  EXPECT_NE(message.find("not_a_model"), std::string::npos) << message;
  for (const char* arch : kArchitectures)
    EXPECT_NE(message.find(arch), std::string::npos) << message;
  EXPECT_NE(message.find(supported_architectures()), std::string::npos);
  std::filesystem::remove_all(directory);
}

}  // namespace
}  // namespace moenav::testing
