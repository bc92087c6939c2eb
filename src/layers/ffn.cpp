#include "layers/ffn.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/activation.h"
#include "backend/cpu/matmul.h"
#include "core/check.h"

namespace moenav {
namespace {

// Columns [begin, end) of one row: the biases, then act(gate, up) into gate.
void activate(float* gate, float* up, int64_t begin, int64_t end, const FfnWeights& weights,
              const Activation& activation) {
  if (!weights.gate_bias.empty()) {
    const float* bias = static_cast<const float*>(weights.gate_bias.data);
    for (int64_t i = begin; i < end; ++i) gate[i] += bias[i];
  }
  if (!weights.up_bias.empty()) {
    const float* bias = static_cast<const float*>(weights.up_bias.data);
    for (int64_t i = begin; i < end; ++i) up[i] += bias[i];
  }
  if (activation.kind == FfnActivation::Swiglu) {
    cpu::silu_mul(gate + begin, up + begin, end - begin);
  } else {
    for (int64_t i = begin; i < end; ++i) {
      const float g = std::min(gate[i], activation.limit);
      const float u = std::clamp(up[i], -activation.limit, activation.limit);
      const float glu = g / (1.0f + std::exp(-g * activation.alpha));
      gate[i] = (u + 1.0f) * glu;
    }
  }
}

// gate <- act(gate(x) + b_gate, up(x) + b_up), [n_rows, width]. The two projections share one
// quantized input (when their activation formats agree) and one parallel region: each thread
// computes the same rows of both weights, then the activation on those columns, so the
// activation runs in parallel and no thread waits between the steps.
void gate_up_activation(const FfnWeights& weights, const float* input, int64_t n_rows, float* gate,
                        float* up, ThreadPool& pool, const Activation& activation) {
  // Workers reach the caller's buffers through references (see cpu::matmul).
  thread_local cpu::PreparedInput gate_storage, up_storage;
  cpu::PreparedInput& gate_input = gate_storage;
  cpu::PreparedInput& up_own = up_storage;
  const int64_t width = weights.gate.rows();
  const int64_t cols = weights.gate.cols();
  cpu::prepare_input(weights.gate.dtype, input, n_rows, cols, gate_input, &pool);
  const bool shared = cpu::input_format_for(weights.up.dtype) == gate_input.format;
  if (!shared) cpu::prepare_input(weights.up.dtype, input, n_rows, cols, up_own, &pool);
  const cpu::PreparedInput& up_input = shared ? gate_input : up_own;
  auto columns = [&](int64_t begin, int64_t end) {
    cpu::matmul_rows(weights.gate, gate_input, gate, width, begin, end);
    cpu::matmul_rows(weights.up, up_input, up, width, begin, end);
    for (int64_t t = 0; t < n_rows; ++t) {
      activate(gate + t * width, up + t * width, begin, end, weights, activation);
    }
  };
  const cpu::RowSplit split = cpu::split_rows(weights.gate, 2 * n_rows, pool.size());
  if (split.threads == 1) {
    columns(0, width);
    return;
  }
  pool.run([&](int thread, int) {
    const auto [begin, end] = split.rows_of(thread, width);
    if (begin < end) columns(begin, end);
  });
}

}  // namespace

void ffn_gate_up(const FfnWeights& weights, const float* input, int64_t n_rows, Workspace& work,
                 ThreadPool& pool, const Activation& activation) {
  MOENAV_CHECK(weights.up.rows() == weights.gate.rows() && weights.up.cols() == weights.gate.cols());
  gate_up_activation(weights, input, n_rows, work.ffn_gate.data(), work.ffn_up.data(), pool, activation);
}

void ffn_forward(const FfnWeights& weights, const float* input, int64_t n_rows, float* output,
                 Workspace& work, ThreadPool& pool, const Activation& activation) {
  const int64_t hidden = weights.down.rows();
  ffn_gate_up(weights, input, n_rows, work, pool, activation);
  cpu::matmul(weights.down, work.ffn_gate.data(), n_rows, output, pool);
  if (!weights.down_bias.empty()) {
    const float* bias = static_cast<const float*>(weights.down_bias.data);
    for (int64_t r = 0; r < n_rows; ++r)
      for (int64_t i = 0; i < hidden; ++i) output[r * hidden + i] += bias[i];
  }
}

}  // namespace moenav
