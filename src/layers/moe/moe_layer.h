// The MoE block as named stages (vLLM's vocabulary, llama.cpp's order):
//   Router (logits, softmax, top-k) -> RoutingPolicy -> Dispatch (rows per expert)
//   -> Experts (each through the ExpertStore) -> Combine (weighted sum in slot order).
// Combine sums each row's slots in a fixed order, so results do not depend on which expert ran
// first or where it lived. Shared experts (Qwen2-MoE, DeepSeek) are added after Combine.
#pragma once

#include <functional>

#include "core/thread_pool.h"
#include "experts/expert_store.h"
#include "layers/batch.h"
#include "layers/moe/routing_policy.h"
#include "model/model_config.h"
#include "model/model_weights.h"

namespace moenav {

// Sees every layer's routing (traces, statistics, prefetchers).
using RoutingObserver = std::function<void(int64_t layer, const Routing& routing)>;

struct MoeContext {
  const RoutingPolicy* policy;
  ExpertStore* store;
  const RoutingObserver* observer;  // may be null
};

// Adds the shared experts' output (sigmoid-gated for Qwen2-MoE) to output: [T, hidden].
void shared_expert_forward(const ModelConfig& config, const LayerWeights& weights,
                           const float* normed, int64_t n_rows, float* output, Workspace& work,
                           ThreadPool& pool);

// normed: [T, hidden] -> output: [T, hidden]; Router -> RoutingPolicy -> Dispatch -> Experts ->
// Combine, then the shared experts.
void moe_forward(const ModelConfig& config, const LayerWeights& weights, int64_t layer,
                 const MoeContext& context, const float* normed, int64_t n_rows, float* output,
                 Workspace& work, ThreadPool& pool);

}  // namespace moenav
