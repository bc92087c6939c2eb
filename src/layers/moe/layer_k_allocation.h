// Data-free per-layer top-k allocation (LExI-like): spend a budget of experts per token,
// average_k × (MoE layers), where dropping experts hurts least, using only the weights.
//
// The rule. Probe inputs are 64 vocabulary embeddings drawn with a fixed seed, RMS-normalized
// with each layer's ffn_norm (no text is read). For each MoE layer and each k from 1 to K
// (K = min(n_experts, max(2 × model k, ceil(average_k) + 1))), the layer's routed output with the
// top-k experts is compared with its output at the model's own k:
//     D_l(k) = Σ_t ||y_k(t) − y_ref(t)||² / Σ_t ||y_ref(t)||²
// Every layer starts at k = 1; the rest of the budget goes one expert at a time to the layer whose
// D falls most from the extra expert (ties to the earlier layer). Layers whose routers are
// confident and whose experts agree keep few experts; layers where the second expert matters get
// more.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model_config.h"
#include "model/model_weights.h"
#include "moenav/status.h"

namespace moenav {

class ThreadPool;

// k for every layer (dense layers keep the model's k). Errors: average_k outside [1, K].
Expected<std::vector<int64_t>> allocate_layer_k(const ModelConfig& config, const ModelWeights& weights,
                                                double average_k, ThreadPool& pool);

}  // namespace moenav
