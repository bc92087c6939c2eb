// Perplexity over a token stream, in the two protocols moenav reports:
//  full  - non-overlapping windows of `seq` tokens from the start (whole windows only), each
//          scored on its seq-1 next-token predictions (shared/README.md; the paper's protocol);
//  llama - the same windows, scoring only predictions from the window's middle on, like
//          llama.cpp's llama-perplexity, for cross-checks.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "moenav/engine.h"

namespace moenav {

enum class PerplexityProtocol { Full, Llama };

struct PerplexityOptions {
  int64_t seq = 512;
  int64_t max_tokens = 0;  // use only the first max_tokens tokens (0 = all)
  PerplexityProtocol protocol = PerplexityProtocol::Full;
};

struct PerplexityResult {
  double ppl = 0.0;
  double total_nll = 0.0;
  int64_t scored_tokens = 0;
  int64_t windows = 0;
  double seconds = 0.0;
};

// progress(window_done, windows_total, running_ppl)
Expected<PerplexityResult> perplexity(
    Engine& engine, std::span<const int32_t> tokens, const PerplexityOptions& options,
    const std::function<void(int64_t, int64_t, double)>& progress = {});

// -log softmax(logits)[target], computed stably in double.
double negative_log_likelihood(std::span<const float> logits, int32_t target);

}  // namespace moenav
