#include "experts/gate_speculation.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/matmul.h"
#include "core/thread_pool.h"

namespace moenav {

int64_t moe_layer_ahead(const ModelConfig& config, int64_t layer, int distance) {
  for (int64_t next = layer + 1; next < config.n_layers; ++next) {
    if (config.is_moe_layer(next) && --distance == 0) return next;
  }
  return -1;
}

void speculate_experts(const ModelConfig& config, const LayerWeights& target, const float* normed,
                       int64_t n_tokens, int64_t k, ThreadPool* pool,
                       std::vector<int32_t>& predictions) {
  const int64_t n_experts = config.n_experts;
  k = std::min(k, n_experts);
  std::vector<float> logits(static_cast<size_t>(n_tokens * n_experts));  // [T, n_experts]
  if (pool != nullptr) {
    cpu::matmul(target.router, normed, n_tokens, logits.data(), *pool);
  } else {
    cpu::matmul_rows(target.router, normed, n_tokens, logits.data(), n_experts, 0, n_experts);
  }
  const float* router_bias = static_cast<const float*>(target.router_bias.data);
  const float* selection_bias = static_cast<const float*>(target.expert_selection_bias.data);
  predictions.assign(static_cast<size_t>(n_tokens * k), -1);
  std::vector<float> choice(static_cast<size_t>(n_experts));
  std::vector<int32_t> order(static_cast<size_t>(n_experts));
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t e = 0; e < n_experts; ++e) {
      float score = logits[static_cast<size_t>(t * n_experts + e)];
      if (router_bias) score += router_bias[e];
      // With a selection bias the ranking is of sigmoid(logit) + bias (DeepSeek-V3).
      if (selection_bias) score = 1.0f / (1.0f + std::exp(-score)) + selection_bias[e];
      choice[static_cast<size_t>(e)] = score;
      order[static_cast<size_t>(e)] = static_cast<int32_t>(e);
    }
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
      const float sa = choice[static_cast<size_t>(a)], sb = choice[static_cast<size_t>(b)];
      return sa > sb || (sa == sb && a < b);
    });
    std::copy(order.begin(), order.begin() + k, predictions.begin() + t * k);
  }
}

std::vector<int32_t> first_use_order(std::span<const int32_t> predictions, int64_t n_experts) {
  std::vector<int32_t> order;
  std::vector<bool> seen(static_cast<size_t>(n_experts), false);
  for (int32_t expert : predictions) {
    if (expert < 0 || expert >= n_experts || seen[static_cast<size_t>(expert)]) continue;
    seen[static_cast<size_t>(expert)] = true;
    order.push_back(expert);
  }
  return order;
}

}  // namespace moenav
