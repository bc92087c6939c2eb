// The generation loop shared by the CLI, the benchmark and the server: prefill the prompt, then
// sample and feed one token at a time until EOS, the token limit, or the callback says stop.
// Records TTFT (prefill + first token) and per-token decode time.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "moenav/engine.h"
#include "runtime/sampler.h"

namespace moenav {

struct GenerationOptions {
  int64_t max_tokens = 128;
  SamplingParams sampling;
  bool stop_at_eos = true;
};

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated, EOS excluded
  std::string stop_reason;      // "eos", "length", "callback"
  double ttft_seconds = 0.0;    // start to first generated token
  double decode_seconds = 0.0;  // time for the tokens after the first
  int64_t prompt_tokens = 0;
  double tpot_seconds() const {
    return tokens.size() > 1 ? decode_seconds / static_cast<double>(tokens.size() - 1) : 0.0;
  }
};

// on_token returns false to stop early. The session continues from its current position.
Expected<GenerationResult> generate(Engine& engine, Session& session,
                                    std::span<const int32_t> prompt,
                                    const GenerationOptions& options,
                                    const std::function<bool(int32_t token)>& on_token = {});

// Holds back bytes of an incomplete UTF-8 character so streamed text is always valid.
class Utf8Stream {
 public:
  std::string push(const std::string& bytes);  // returns what can be shown now
  std::string flush();                         // whatever is left

 private:
  std::string pending_;
};

}  // namespace moenav
