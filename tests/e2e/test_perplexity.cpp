// Perplexity on WikiText-2 against reference.json (transformers), within 0.01 %: the protocol
// of shared/README.md over whole splits, for both tiny models; and the top-k-reduced references
// (routing.top_k below the model's own) on the first 65,536 test tokens.
#include <fstream>
#include <sstream>

#include "golden.h"
#include "metrics/perplexity.h"
#include "tokenizer/tokenizer.h"

namespace moenav::testing {
namespace {

struct PerplexityCase {
  const char* model;
  const char* split;
  int64_t seq;
  const char* reference_key;
  int top_k = 0;           // routing.top_k (0 = the model's)
  int64_t max_tokens = 0;  // 0 = the whole split
};

// What GoogleTest prints for GetParam() in the test's log line.
void PrintTo(const PerplexityCase& c, std::ostream* out) {
  *out << c.model << " " << c.split << " seq " << c.seq << " top_k " << c.top_k << " max_tokens " << c.max_tokens;
}

class Perplexity : public ::testing::TestWithParam<PerplexityCase> {};

TEST_P(Perplexity, MatchesTransformers) {
  const PerplexityCase& c = GetParam();
  const std::string directory = std::string("models/") + c.model;
  const std::string text_path = std::string("data/wikitext-2/") + c.split + ".txt";
  MOENAV_REQUIRE_SHARED(directory + "/model.safetensors");
  MOENAV_REQUIRE_SHARED(text_path);
  std::ifstream stream(shared_path(text_path), std::ios::binary);
  std::stringstream text;
  text << stream.rdbuf();
  EngineConfig config;
  config.routing.top_k = c.top_k;
  auto engine = open_engine(shared_path(directory), config);
  ASSERT_TRUE(engine);
  const std::vector<int32_t> tokens = engine->tokenizer().encode(text.str());
  PerplexityOptions options;
  options.seq = c.seq;
  options.max_tokens = c.max_tokens;
  auto result = perplexity(*engine, tokens, options);
  ASSERT_TRUE(result.ok()) << result.error();
  const nlohmann::json expected = read_json(shared_path(directory + "/reference.json"))["perplexity"][c.reference_key];
  EXPECT_EQ(result->scored_tokens, expected["scored_tokens"].get<int64_t>());
  const double reference = expected["ppl"].get<double>();
  EXPECT_NEAR(result->ppl, reference, reference * 1e-4);
  std::printf("%s %s: ppl %.6f (reference %.6f, relative %.2e), %.0f tokens/s\n", c.model, c.reference_key,
              result->ppl, reference, std::abs(result->ppl / reference - 1), result->windows * c.seq / result->seconds);
}

INSTANTIATE_TEST_SUITE_P(
    WikiText2, Perplexity,
    ::testing::Values(PerplexityCase{"tiny-mixtral", "test", 512, "test_seq512"},
                      PerplexityCase{"tiny-mixtral", "valid", 1024, "valid_seq1024"},
                      PerplexityCase{"tiny-qwen3-moe", "test", 512, "test_seq512"},
                      PerplexityCase{"tiny-qwen3-moe", "valid", 1024, "valid_seq1024"},
                      PerplexityCase{"tiny-mixtral", "test", 512, "test_seq512_first65536_topk1", 1, 65536},
                      PerplexityCase{"tiny-qwen3-moe", "test", 512, "test_seq512_first65536_topk1", 1, 65536},
                      PerplexityCase{"tiny-qwen3-moe", "test", 512, "test_seq512_first65536_topk2", 2, 65536}),
    [](const auto& info) { return std::string(info.param.model == std::string("tiny-mixtral") ? "mixtral_" : "qwen3_") + info.param.reference_key; });

}  // namespace
}  // namespace moenav::testing
