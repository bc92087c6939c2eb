// Grouped-query self-attention with RoPE and a KV cache: projections (optional biases), optional
// q/k RMSNorm per head (Qwen3) or over the projection (OLMoE), rotary embedding, cache append,
// causal softmax attention (optionally windowed, optionally with per-head sinks: gpt-oss), output
// projection. DeepSeek's latent attention is attention_mla.h.
#pragma once

#include <span>

#include "core/thread_pool.h"
#include "layers/batch.h"
#include "layers/rope.h"
#include "model/model_config.h"
#include "model/model_weights.h"

namespace moenav {

// normed: [T, hidden] -> output: [T, hidden] (the attention block's contribution to the residual)
void attention_forward(const ModelConfig& config, const LayerWeights& weights, int64_t layer,
                       const Rope& rope, std::span<const BatchRow> rows, Workspace& work,
                       const float* normed, float* output, ThreadPool& pool);

}  // namespace moenav
