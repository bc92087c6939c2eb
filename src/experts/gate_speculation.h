// Next-layer gate speculation (mixtral-offloading): layer l+1's router applied to layer l's MoE
// input predicts which experts layer l+1 will pick, early enough to load them while layer l
// computes. The residual stream changes little from one layer to the next, so the guess is often
// right. It only ranks (no softmax needed: top-k of logits is top-k of probabilities); the real
// router still decides, so a wrong guess costs bandwidth, never accuracy.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/model_config.h"
#include "model/model_weights.h"

namespace moenav {

class ThreadPool;

// The MoE layer `distance` MoE layers after `layer` (1 = the next one), or -1 when there is none.
int64_t moe_layer_ahead(const ModelConfig& config, int64_t layer, int distance);

// predictions [T, k]: each token's k best experts of `target`'s router applied to normed [T, hidden]
// (ties to the lower index, router bias and selection bias included; group limits ignored).
void speculate_experts(const ModelConfig& config, const LayerWeights& target, const float* normed,
                       int64_t n_tokens, int64_t k, ThreadPool* pool,
                       std::vector<int32_t>& predictions);

// The experts of per-token predictions [T, k] in first-use order (token-major, slot order), as
// Dispatch would order them; -1 entries are ignored.
std::vector<int32_t> first_use_order(std::span<const int32_t> predictions, int64_t n_experts);

}  // namespace moenav
