// Helpers for golden comparisons against transformers' outputs stored beside each model:
// reference_logits.safetensors (input_ids [B, S], logits [B, S, V]) and reference.json.
#pragma once

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "moenav/engine.h"
#include "runtime/generate.h"
#include "test_paths.h"

namespace moenav::testing {

inline std::unique_ptr<Engine> open_engine(const std::string& path, EngineConfig config = {}) {
  auto engine = Engine::create(path, config);
  EXPECT_TRUE(engine.ok()) << engine.error();
  return engine.ok() ? std::move(engine).value() : nullptr;
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream stream(path);
  return nlohmann::json::parse(stream);
}

struct LogitsComparison {
  double max_abs_diff = 0.0;
  int64_t argmax_mismatches = 0;
  int64_t positions = 0;
};

// Runs every row of input_ids through a fresh session and compares all logits.
inline LogitsComparison compare_logits(Engine& engine, const std::string& reference_path) {
  WeightIndex index;
  Status read = read_safetensors_file(reference_path, index);
  EXPECT_TRUE(read.ok()) << read.message();
  const TensorView ids = index.find("input_ids")->view;
  const TensorView expected = index.find("logits")->view;
  const int64_t batch = ids.shape[0], seq = ids.shape[1], vocab = expected.shape[2];
  EXPECT_EQ(vocab, engine.vocab_size());
  LogitsComparison result;
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<int32_t> tokens(static_cast<size_t>(seq));
    for (int64_t s = 0; s < seq; ++s) tokens[static_cast<size_t>(s)] = static_cast<int32_t>(static_cast<const int64_t*>(ids.data)[b * seq + s]);
    auto session = engine.new_session();
    auto logits = engine.evaluate(*session, tokens, true);
    EXPECT_TRUE(logits.ok()) << logits.error();
    const float* reference = static_cast<const float*>(expected.data) + b * seq * vocab;
    for (int64_t s = 0; s < seq; ++s) {
      int64_t best_ours = 0, best_reference = 0;
      for (int64_t v = 0; v < vocab; ++v) {
        const float ours = (*logits)[static_cast<size_t>(s * vocab + v)];
        const float theirs = reference[s * vocab + v];
        result.max_abs_diff = std::max(result.max_abs_diff, static_cast<double>(std::abs(ours - theirs)));
        if (ours > (*logits)[static_cast<size_t>(s * vocab + best_ours)]) best_ours = v;
        if (theirs > reference[s * vocab + best_reference]) best_reference = v;
      }
      result.argmax_mismatches += best_ours != best_reference;
      ++result.positions;
    }
  }
  return result;
}

// Greedy continuation of prompt ids, ignoring EOS, as many tokens as `expected` holds.
inline std::vector<int32_t> greedy(Engine& engine, const std::vector<int32_t>& prompt, size_t count) {
  auto session = engine.new_session();
  GenerationOptions options;
  options.max_tokens = static_cast<int64_t>(count);
  options.stop_at_eos = false;
  auto result = generate(engine, *session, prompt, options);
  EXPECT_TRUE(result.ok()) << result.error();
  return result.ok() ? result->tokens : std::vector<int32_t>{};
}

}  // namespace moenav::testing
