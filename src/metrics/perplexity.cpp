#include "metrics/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/thread_pool.h"

namespace moenav {

double negative_log_likelihood(std::span<const float> logits, int32_t target) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float value : logits) sum += std::exp(static_cast<double>(value) - max_logit);
  return std::log(sum) - (static_cast<double>(logits[static_cast<size_t>(target)]) - max_logit);
}

Expected<PerplexityResult> perplexity(Engine& engine, std::span<const int32_t> tokens,
                                      const PerplexityOptions& options,
                                      const std::function<void(int64_t, int64_t, double)>& progress) {
  if (options.seq < 2) return Status::errorf("perplexity: --seq must be at least 2 (got {})", options.seq);
  if (options.seq > engine.context_length()) {
    return Status::errorf("perplexity: --seq {} exceeds the context length {}", options.seq,
                          engine.context_length());
  }
  if (options.max_tokens > 0 && static_cast<int64_t>(tokens.size()) > options.max_tokens) {
    tokens = tokens.first(static_cast<size_t>(options.max_tokens));
  }
  const int64_t seq = options.seq;
  const int64_t windows = static_cast<int64_t>(tokens.size()) / seq;
  if (windows == 0) {
    return Status::errorf("perplexity: the text has {} tokens, fewer than one window of {}",
                          tokens.size(), seq);
  }
  const int64_t first_scored = options.protocol == PerplexityProtocol::Full ? 0 : seq / 2;
  const int64_t vocab = engine.vocab_size();
  PerplexityResult result;
  const auto start = std::chrono::steady_clock::now();
  auto session = engine.new_session();
  std::vector<float> logits;  // [seq, vocab], reused by every window
  std::vector<double> row_nll(static_cast<size_t>(seq - 1 - first_scored));
  for (int64_t window = 0; window < windows; ++window) {
    session->reset();
    const auto window_tokens = tokens.subspan(static_cast<size_t>(window * seq), static_cast<size_t>(seq));
    MOENAV_RETURN_IF_ERROR(engine.evaluate(*session, window_tokens, true, logits));
    // Rows in parallel, summed in order afterwards: the total does not depend on the threads.
    engine.pool().parallel_for(seq - 1 - first_scored, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t j = first_scored + i;
        const std::span<const float> row(logits.data() + j * vocab, static_cast<size_t>(vocab));
        row_nll[static_cast<size_t>(i)] =
            negative_log_likelihood(row, window_tokens[static_cast<size_t>(j + 1)]);
      }
    });
    for (double nll : row_nll) result.total_nll += nll;
    result.scored_tokens += static_cast<int64_t>(row_nll.size());
    result.windows = window + 1;
    if (progress) progress(window + 1, windows, std::exp(result.total_nll / result.scored_tokens));
  }
  result.ppl = std::exp(result.total_nll / static_cast<double>(result.scored_tokens));
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace moenav
