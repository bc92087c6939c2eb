#include "layers/moe/router.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

namespace moenav {
namespace {

constexpr float kExcluded = -std::numeric_limits<float>::infinity();

void softmax(const float* logits, int64_t n, float* out) {
  const float max_logit = *std::max_element(logits, logits + n);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = std::exp(logits[i] - max_logit);
    sum += out[i];
  }
  for (int64_t i = 0; i < n; ++i) out[i] /= sum;
}

// The k best of `choice` into order[0, k): highest first, ties to the lower index (torch.topk).
void top_k(const std::vector<float>& choice, int64_t k, std::vector<int32_t>& order) {
  order.resize(choice.size());
  for (size_t e = 0; e < order.size(); ++e) order[e] = static_cast<int32_t>(e);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
    const float sa = choice[static_cast<size_t>(a)], sb = choice[static_cast<size_t>(b)];
    return sa > sb || (sa == sb && a < b);
  });
}

// Group-limited selection (DeepSeek): experts outside the topk_group best groups score 0, as
// transformers' masked_fill(…, 0.0) does.
void limit_to_groups(const ModelConfig& config, std::vector<float>& choice) {
  const int64_t groups = config.n_expert_groups;
  const int64_t per_group = config.n_experts / groups;
  std::vector<float> group_scores(static_cast<size_t>(groups));
  for (int64_t g = 0; g < groups; ++g) {
    std::vector<float> members(choice.begin() + g * per_group,
                               choice.begin() + (g + 1) * per_group);
    std::sort(members.begin(), members.end(), std::greater<>());
    group_scores[static_cast<size_t>(g)] = config.group_score == GroupScore::Max
                                               ? members[0]
                                               : members[0] + (per_group > 1 ? members[1] : 0.0f);
  }
  std::vector<int32_t> best_groups;
  top_k(group_scores, config.n_expert_groups_used, best_groups);
  std::vector<bool> keep(static_cast<size_t>(groups), false);
  for (int64_t i = 0; i < config.n_expert_groups_used; ++i)
    keep[static_cast<size_t>(best_groups[static_cast<size_t>(i)])] = true;
  for (int64_t e = 0; e < config.n_experts; ++e) {
    if (!keep[static_cast<size_t>(e / per_group)] && choice[static_cast<size_t>(e)] != kExcluded) {
      choice[static_cast<size_t>(e)] = 0.0f;
    }
  }
}

}  // namespace

void select_experts(const ModelConfig& config, const float* logits, int64_t n_tokens, int64_t k,
                    const std::vector<bool>* allowed, Routing& routing,
                    const float* selection_bias) {
  const int64_t n_experts = config.n_experts;
  routing.n_tokens = n_tokens;
  routing.k = k;
  routing.experts.assign(static_cast<size_t>(n_tokens * k), -1);
  routing.weights.assign(static_cast<size_t>(n_tokens * k), 0.0f);
  std::vector<float> scores(static_cast<size_t>(n_experts));  // what a selected expert weighs
  std::vector<float> choice(static_cast<size_t>(n_experts));  // what selection ranks
  std::vector<int32_t> order;
  std::vector<float> selected(static_cast<size_t>(k));
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* row = logits + t * n_experts;
    // Scores before selection: softmax over all experts, sigmoid, or the raw logits (SoftmaxTopk).
    if (config.gating == Gating::Softmax) softmax(row, n_experts, scores.data());
    for (int64_t e = 0; e < n_experts; ++e) {
      float& score = scores[static_cast<size_t>(e)];
      if (config.gating == Gating::Sigmoid) score = 1.0f / (1.0f + std::exp(-row[e]));
      if (config.gating == Gating::SoftmaxTopk) score = row[e];
      choice[static_cast<size_t>(e)] = score + (selection_bias ? selection_bias[e] : 0.0f);
      if (allowed && !(*allowed)[static_cast<size_t>(e)])
        choice[static_cast<size_t>(e)] = kExcluded;
    }
    if (config.n_expert_groups > 1) limit_to_groups(config, choice);
    top_k(choice, k, order);
    for (int64_t slot = 0; slot < k; ++slot)
      selected[static_cast<size_t>(slot)] =
          scores[static_cast<size_t>(order[static_cast<size_t>(slot)])];
    if (config.gating == Gating::SoftmaxTopk) {
      softmax(selected.data(), k, selected.data());
    } else if (config.norm_topk_prob) {
      float sum = 0.0f;
      for (float weight : selected) sum += weight;
      for (float& weight : selected) weight /= sum + 1e-20f;
    }
    for (int64_t slot = 0; slot < k; ++slot) {
      routing.experts[static_cast<size_t>(t * k + slot)] = order[static_cast<size_t>(slot)];
      routing.weights[static_cast<size_t>(t * k + slot)] =
          selected[static_cast<size_t>(slot)] * config.routed_scaling_factor;
    }
  }
}

}  // namespace moenav
