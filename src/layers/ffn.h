// The SiLU-gated feed-forward block (SwiGLU) used by every expert and dense layer:
// down(silu(gate(x)) * up(x)).
#pragma once

#include "core/thread_pool.h"
#include "layers/batch.h"
#include "model/model_weights.h"

namespace moenav {

// input: [n_rows, hidden] -> output: [n_rows, hidden]; uses work.ffn_gate / work.ffn_up.
void ffn_forward(const FfnWeights& weights, const float* input, int64_t n_rows, float* output,
                 Workspace& work, ThreadPool& pool);

}  // namespace moenav
