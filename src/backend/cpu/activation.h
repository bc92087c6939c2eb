// Elementwise activations of the feed-forward layers, vectorized: the SwiGLU product runs once
// per expert row and column, and the scalar std::exp is a visible share of a decode step.
#pragma once

#include <cstdint>

#include "backend/cpu/cpu_isa.h"

namespace moenav::cpu {

// gate[i] <- silu(gate[i]) * up[i] = gate[i] / (1 + exp(-gate[i])) * up[i] for i in [0, n).
// The SIMD variants compute exp to within about 2 ulp (the scalar one is std::exp; both clamp its
// argument to [-87, 88]) and the rest in the same operations and order, so they agree with the
// reference to float rounding.
void silu_mul(float* gate, const float* up, int64_t n, Isa isa = best_isa());

}  // namespace moenav::cpu
