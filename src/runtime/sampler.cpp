#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>

namespace moenav {

int32_t argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (params_.temperature <= 0.0f) return argmax(logits);
  candidates_.clear();
  for (size_t i = 0; i < logits.size(); ++i) {
    candidates_.emplace_back(logits[i] / params_.temperature, static_cast<int32_t>(i));
  }
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  size_t keep = candidates_.size();
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < keep) {
    keep = static_cast<size_t>(params_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<long>(keep), candidates_.end(), by_logit);
    candidates_.resize(keep);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  // Softmax over the survivors, then the smallest prefix whose mass reaches top_p.
  const float max_logit = candidates_.front().first;
  double total = 0.0;
  for (auto& [value, id] : candidates_) {
    value = std::exp(value - max_logit);
    total += value;
  }
  if (params_.top_p < 1.0f) {
    double mass = 0.0;
    size_t cut = 0;
    while (cut < candidates_.size()) {
      mass += candidates_[cut++].first / total;
      if (mass >= params_.top_p) break;
    }
    candidates_.resize(std::max<size_t>(cut, 1));
    total = 0.0;
    for (const auto& [value, id] : candidates_) total += value;
  }
  std::uniform_real_distribution<double> uniform(0.0, total);
  double target = uniform(generator_);
  for (const auto& [value, id] : candidates_) {
    target -= value;
    if (target <= 0.0) return id;
  }
  return candidates_.back().second;
}

}  // namespace moenav
