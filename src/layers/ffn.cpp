#include "layers/ffn.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/matmul.h"

namespace moenav {
namespace {

void add_bias(float* rows, const TensorView& bias, int64_t n_rows, int64_t width) {
  if (bias.empty()) return;
  const float* b = static_cast<const float*>(bias.data);
  for (int64_t r = 0; r < n_rows; ++r)
    for (int64_t i = 0; i < width; ++i) rows[r * width + i] += b[i];
}

}  // namespace

void ffn_forward(const FfnWeights& weights, const float* input, int64_t n_rows, float* output,
                 Workspace& work, ThreadPool& pool, const Activation& activation) {
  const int64_t width = weights.gate.rows();
  const int64_t hidden = weights.down.rows();
  float* gate = work.ffn_gate.data();  // [n_rows, ffn]
  float* up = work.ffn_up.data();      // [n_rows, ffn]
  cpu::matmul(weights.gate, input, n_rows, gate, pool);
  cpu::matmul(weights.up, input, n_rows, up, pool);
  add_bias(gate, weights.gate_bias, n_rows, width);
  add_bias(up, weights.up_bias, n_rows, width);
  if (activation.kind == FfnActivation::Swiglu) {
    for (int64_t i = 0; i < n_rows * width; ++i) {
      const float g = gate[i];
      gate[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  } else {
    for (int64_t i = 0; i < n_rows * width; ++i) {
      const float g = std::min(gate[i], activation.limit);
      const float u = std::clamp(up[i], -activation.limit, activation.limit);
      const float glu = g / (1.0f + std::exp(-g * activation.alpha));
      gate[i] = (u + 1.0f) * glu;
    }
  }
  cpu::matmul(weights.down, gate, n_rows, output, pool);
  add_bias(output, weights.down_bias, n_rows, hidden);
}

}  // namespace moenav
