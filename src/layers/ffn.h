// The gated feed-forward block used by every expert and dense layer:
// down(act(gate(x) + b_gate, up(x) + b_up)) + b_down, where act is SwiGLU, silu(g) * u, or
// gpt-oss's clamped variant, (clamp(u, -limit, limit) + 1) * g' * sigmoid(alpha * g') with
// g' = min(g, limit). Biases are optional (empty views).
#pragma once

#include "core/thread_pool.h"
#include "layers/batch.h"
#include "model/model_config.h"
#include "model/model_weights.h"

namespace moenav {

struct Activation {
  FfnActivation kind = FfnActivation::Swiglu;
  float alpha = 1.702f;
  float limit = 7.0f;
};

// The experts' activation as the configuration declares it.
inline Activation expert_activation(const ModelConfig& config) {
  return {config.expert_activation, config.swiglu_alpha, config.swiglu_limit};
}

// input: [n_rows, hidden] -> work.ffn_gate: [n_rows, ffn] = act(gate(x) + b_gate, up(x) + b_up),
// the down projection's input; uses work.ffn_up.
void ffn_gate_up(const FfnWeights& weights, const float* input, int64_t n_rows, Workspace& work,
                 ThreadPool& pool, const Activation& activation = {});
// input: [n_rows, hidden] -> output: [n_rows, hidden]; uses work.ffn_gate / work.ffn_up.
void ffn_forward(const FfnWeights& weights, const float* input, int64_t n_rows, float* output,
                 Workspace& work, ThreadPool& pool, const Activation& activation = {});

}  // namespace moenav
