#include "layers/ffn.h"

#include <cmath>

#include "backend/cpu/matmul.h"

namespace moenav {

void ffn_forward(const FfnWeights& weights, const float* input, int64_t n_rows, float* output,
                 Workspace& work, ThreadPool& pool) {
  const int64_t width = weights.gate.rows();
  float* gate = work.ffn_gate.data();  // [n_rows, ffn]
  float* up = work.ffn_up.data();      // [n_rows, ffn]
  cpu::matmul(weights.gate, input, n_rows, gate, pool);
  cpu::matmul(weights.up, input, n_rows, up, pool);
  for (int64_t i = 0; i < n_rows * width; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
  cpu::matmul(weights.down, gate, n_rows, output, pool);
}

}  // namespace moenav
