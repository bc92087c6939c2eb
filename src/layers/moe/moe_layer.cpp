#include "layers/moe/moe_layer.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/matmul.h"
#include "layers/ffn.h"

namespace moenav {
namespace {

// Dispatch: for each expert, the (row, slot) pairs routed to it, experts in first-use order.
struct Dispatch {
  std::vector<int32_t> order;                          // experts with work, first-use order
  std::vector<std::vector<std::pair<int64_t, int64_t>>> assignments;  // [n_experts] -> (row, slot)
};

void build_dispatch(const Routing& routing, int64_t n_experts, Dispatch& dispatch) {
  dispatch.order.clear();
  dispatch.assignments.assign(static_cast<size_t>(n_experts), {});
  for (int64_t t = 0; t < routing.n_tokens; ++t) {
    for (int64_t slot = 0; slot < routing.k; ++slot) {
      const int32_t expert = routing.expert(t, slot);
      if (expert < 0) continue;
      auto& rows = dispatch.assignments[static_cast<size_t>(expert)];
      if (rows.empty()) dispatch.order.push_back(expert);
      rows.emplace_back(t, slot);
    }
  }
}

void add_router_bias(const TensorView& bias, float* logits, int64_t n_rows, int64_t n_experts) {
  if (bias.empty()) return;
  const float* b = static_cast<const float*>(bias.data);
  for (int64_t t = 0; t < n_rows; ++t)
    for (int64_t e = 0; e < n_experts; ++e) logits[t * n_experts + e] += b[e];
}

}  // namespace

void shared_expert_forward(const ModelConfig& config, const LayerWeights& weights,
                           const float* normed, int64_t n_rows, float* output, Workspace& work,
                           ThreadPool& pool) {
  const int64_t hidden = config.hidden;
  float* shared = work.shared_output.data();  // [T, hidden]
  ffn_forward(weights.shared_expert, normed, n_rows, shared, work, pool);
  for (int64_t t = 0; t < n_rows; ++t) {
    float scale = 1.0f;
    if (!weights.shared_expert_gate.empty()) {
      // Qwen2-MoE: sigmoid(x . gate) scales the shared expert per token.
      float logit = 0.0f;
      cpu::matmul(weights.shared_expert_gate, normed + t * hidden, 1, &logit, pool);
      scale = 1.0f / (1.0f + std::exp(-logit));
    }
    for (int64_t i = 0; i < hidden; ++i) output[t * hidden + i] += scale * shared[t * hidden + i];
  }
}

void moe_forward(const ModelConfig& config, const LayerWeights& weights, int64_t layer,
                 const MoeContext& context, const float* normed, int64_t n_rows, float* output,
                 Workspace& work, ThreadPool& pool) {
  const int64_t hidden = config.hidden;
  // Router
  float* router_logits = work.router_logits.data();  // [T, n_experts]
  cpu::matmul(weights.router, normed, n_rows, router_logits, pool);
  add_router_bias(weights.router_bias, router_logits, n_rows, config.n_experts);
  Routing routing;
  const int64_t k = context.policy->k_for_layer(layer);
  select_experts(config, router_logits, n_rows, k, context.policy->allowed(layer), routing,
                 static_cast<const float*>(weights.expert_selection_bias.data));
  // RoutingPolicy
  context.policy->apply(routing);
  if (context.observer && *context.observer) (*context.observer)(layer, routing);
  // Dispatch
  Dispatch dispatch;
  build_dispatch(routing, config.n_experts, dispatch);
  LayerPlan plan;
  plan.layer = layer;
  plan.n_tokens = n_rows;
  plan.k = k;
  plan.routed = routing.experts;
  plan.weights = routing.weights;
  plan.experts = dispatch.order;
  plan.normed = normed;
  plan.pool = &pool;
  context.store->begin_layer(plan);
  // Experts: gather the rows of each expert, run it, keep its output per (row, slot).
  float* expert_output = work.expert_output.data();  // [T * k, hidden]
  float* gathered = work.expert_input.data();         // [rows of one expert, hidden]
  float* projected = work.projected.data();           // [rows of one expert, hidden]
  for (int32_t expert : dispatch.order) {
    const auto& assigned = dispatch.assignments[static_cast<size_t>(expert)];
    const int64_t n = static_cast<int64_t>(assigned.size());
    for (int64_t i = 0; i < n; ++i) {
      const float* source = normed + assigned[static_cast<size_t>(i)].first * hidden;
      std::copy(source, source + hidden, gathered + i * hidden);
    }
    const ExpertLease lease = context.store->acquire(layer, expert);
    if (lease.skipped) {  // the miss policy dropped it: like a skipped selection in Combine
      for (const auto& [row, slot] : assigned) routing.experts[static_cast<size_t>(row * k + slot)] = -1;
      context.store->release(layer, expert);
      continue;
    }
    ffn_forward(lease.weights, gathered, n, projected, work, pool, expert_activation(config));
    context.store->release(layer, expert);
    for (int64_t i = 0; i < n; ++i) {
      const auto [row, slot] = assigned[static_cast<size_t>(i)];
      std::copy(projected + i * hidden, projected + (i + 1) * hidden,
                expert_output + (row * k + slot) * hidden);
    }
  }
  context.store->end_layer(layer);
  // Combine: weighted sum over slots in slot order.
  for (int64_t t = 0; t < n_rows; ++t) {
    float* out = output + t * hidden;
    std::fill(out, out + hidden, 0.0f);
    for (int64_t slot = 0; slot < k; ++slot) {
      if (routing.expert(t, slot) < 0) continue;
      const float weight = routing.weight(t, slot);
      const float* contribution = expert_output + (t * k + slot) * hidden;
      for (int64_t i = 0; i < hidden; ++i) out[i] += weight * contribution[i];
    }
  }
  // Shared experts: every token, beside the routed ones.
  if (config.n_shared_experts > 0) shared_expert_forward(config, weights, normed, n_rows, output, work, pool);
}

}  // namespace moenav
