// Token sampling: greedy (temperature 0), or temperature with top-k and top-p filtering, from a
// seeded generator so a (prompt, seed) pair always gives the same text.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace moenav {

struct SamplingParams {
  float temperature = 0.0f;  // <= 0: greedy
  int top_k = 0;             // 0: no limit
  float top_p = 1.0f;        // 1: no limit
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params) : params_(params), generator_(params.seed) {}
  int32_t sample(std::span<const float> logits);

 private:
  SamplingParams params_;
  std::mt19937_64 generator_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

int32_t argmax(std::span<const float> logits);

}  // namespace moenav
