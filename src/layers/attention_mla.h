// Multi-head latent attention (DeepSeek-V2/V3). Each position caches only its normalized kv
// latent [kv_lora_rank] and its rotated shared key [qk_rope]; per-head keys and values are never
// built. Queries absorb kv_b's key half (q_latent = k_b[h] . q_nope[h]) so a score is
// q_latent . latent + q_rope . k_rope, and the value half is applied once to the
// attention-weighted latent (v[h] = v_b[h] . sum_j p_j latent_j). The same path serves prefill and
// decode, so a decode step equals a full recompute.
#pragma once

#include <span>

#include "core/thread_pool.h"
#include "layers/batch.h"
#include "layers/rope.h"
#include "model/model_config.h"
#include "model/model_weights.h"

namespace moenav {

// transformers builds the q_a/kv_a RMSNorms with their default epsilon, not rms_norm_eps.
constexpr float kLatentNormEps = 1e-6f;

// normed: [T, hidden] -> output: [T, hidden]
void mla_attention_forward(const ModelConfig& config, const LayerWeights& weights, int64_t layer,
                           const Rope& rope, std::span<const BatchRow> rows, Workspace& work,
                           const float* normed, float* output, ThreadPool& pool);

}  // namespace moenav
