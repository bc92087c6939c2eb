#include "runtime/generate.h"

#include <chrono>

#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace moenav {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

Expected<GenerationResult> generate(Engine& engine, Session& session,
                                    std::span<const int32_t> prompt,
                                    const GenerationOptions& options,
                                    const std::function<bool(int32_t)>& on_token) {
  if (prompt.empty()) return Status::error("the prompt is empty: give at least one token");
  GenerationResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  std::optional<int32_t> eos = engine.model_config().eos_token;
  if (!eos && engine.has_tokenizer()) eos = engine.tokenizer().eos_id();
  Sampler sampler(options.sampling);
  const auto start = Clock::now();
  MOENAV_ASSIGN_OR_RETURN(std::vector<float> logits, engine.evaluate(session, prompt));
  Clock::time_point first_token_time;
  result.stop_reason = "length";
  while (static_cast<int64_t>(result.tokens.size()) < options.max_tokens) {
    const int32_t token = sampler.sample(logits);
    if (result.tokens.empty()) {
      first_token_time = Clock::now();
      result.ttft_seconds = seconds_since(start);
    }
    if (options.stop_at_eos && eos && token == *eos) {
      result.stop_reason = "eos";
      break;
    }
    result.tokens.push_back(token);
    if (on_token && !on_token(token)) {
      result.stop_reason = "callback";
      break;
    }
    if (static_cast<int64_t>(result.tokens.size()) == options.max_tokens) break;
    if (session.position() + 1 > session.context()) {
      result.stop_reason = "context";
      break;
    }
    MOENAV_ASSIGN_OR_RETURN(logits, engine.evaluate(session, std::span<const int32_t>(&token, 1)));
  }
  if (!result.tokens.empty()) result.decode_seconds = seconds_since(first_token_time);
  return result;
}

std::string Utf8Stream::push(const std::string& bytes) {
  pending_ += bytes;
  // Find the last character start and check whether its sequence is complete.
  size_t cut = pending_.size();
  for (size_t back = 1; back <= 4 && back <= pending_.size(); ++back) {
    const unsigned char c = static_cast<unsigned char>(pending_[pending_.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    const size_t length = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
    if (length > back) cut = pending_.size() - back;
    break;
  }
  std::string ready = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return ready;
}

std::string Utf8Stream::flush() {
  std::string rest;
  rest.swap(pending_);
  return rest;
}

}  // namespace moenav
