// Router: gate scores and top-k selection, as the model defines them: softmax over all experts
// (Mixtral, Qwen, OLMoE, DeepSeek-V2), sigmoid with a selection-only bias (DeepSeek-V3), or
// softmax over the selected logits (gpt-oss); optionally group-limited (DeepSeek), optionally
// renormalized, then scaled by routed_scaling_factor. It never knows where an expert lives. The
// routing policy (routing_policy.h) may change k, exclude pruned experts and drop low-weight
// selections.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model_config.h"

namespace moenav {

// The selection for a batch: for each token row, k slots of (expert, weight).
// A slot whose expert is -1 was dropped by the policy and contributes nothing.
struct Routing {
  int64_t n_tokens = 0;
  int64_t k = 0;
  std::vector<int32_t> experts;  // [T, k]
  std::vector<float> weights;    // [T, k]
  int32_t expert(int64_t token, int64_t slot) const { return experts[static_cast<size_t>(token * k + slot)]; }
  float weight(int64_t token, int64_t slot) const { return weights[static_cast<size_t>(token * k + slot)]; }
};

// logits: [T, n_experts] (router bias already added). allowed: optional mask [n_experts]
// (pruning); k <= allowed count. selection_bias: optional [n_experts], changes which experts are
// chosen but not their weights (e_score_correction_bias).
void select_experts(const ModelConfig& config, const float* logits, int64_t n_tokens, int64_t k,
                    const std::vector<bool>* allowed, Routing& routing,
                    const float* selection_bias = nullptr);

}  // namespace moenav
