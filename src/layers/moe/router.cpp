#include "layers/moe/router.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace moenav {

void select_experts(const ModelConfig& config, const float* logits, int64_t n_tokens, int64_t k,
                    const std::vector<bool>* allowed, Routing& routing) {
  const int64_t n_experts = config.n_experts;
  routing.n_tokens = n_tokens;
  routing.k = k;
  routing.experts.assign(static_cast<size_t>(n_tokens * k), -1);
  routing.weights.assign(static_cast<size_t>(n_tokens * k), 0.0f);
  std::vector<float> probabilities(static_cast<size_t>(n_experts));
  std::vector<int32_t> order(static_cast<size_t>(n_experts));
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* row = logits + t * n_experts;
    // Softmax over all experts (as transformers computes it, before selection).
    const float max_logit = *std::max_element(row, row + n_experts);
    float sum = 0.0f;
    for (int64_t e = 0; e < n_experts; ++e) {
      probabilities[static_cast<size_t>(e)] = std::exp(row[e] - max_logit);
      sum += probabilities[static_cast<size_t>(e)];
    }
    for (float& p : probabilities) p /= sum;
    for (int64_t e = 0; e < n_experts; ++e) order[static_cast<size_t>(e)] = static_cast<int32_t>(e);
    auto score = [&](int32_t e) {
      if (allowed && !(*allowed)[static_cast<size_t>(e)]) return -std::numeric_limits<float>::infinity();
      return probabilities[static_cast<size_t>(e)];
    };
    // Highest probability first; ties go to the lower index, like torch.topk.
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
      const float sa = score(a), sb = score(b);
      return sa > sb || (sa == sb && a < b);
    });
    float selected_sum = 0.0f;
    for (int64_t slot = 0; slot < k; ++slot) selected_sum += probabilities[static_cast<size_t>(order[static_cast<size_t>(slot)])];
    for (int64_t slot = 0; slot < k; ++slot) {
      const int32_t e = order[static_cast<size_t>(slot)];
      float weight = probabilities[static_cast<size_t>(e)];
      if (config.norm_topk_prob) weight /= selected_sum;
      routing.experts[static_cast<size_t>(t * k + slot)] = e;
      routing.weights[static_cast<size_t>(t * k + slot)] = weight * config.routed_scaling_factor;
    }
  }
}

}  // namespace moenav
