// Low-precision copies of every routed expert (HOBBIT's miss policy): a miss computes from a Q4_0
// or Q8_0 copy kept in fast memory instead of waiting for the full-precision bytes. Made once at
// start by dequantizing each row and re-quantizing it with quant::quantize_row. This changes the
// numbers (it is a quality knob, measured by perplexity), unlike every other miss policy but skip.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/dtype.h"
#include "core/host_buffer.h"
#include "model/model_weights.h"
#include "moenav/status.h"

namespace moenav {

struct Model;

class LowBitExperts {
 public:
  // Errors: a type that is not q4_0/q8_0, rows that are not whole blocks of it.
  static Expected<std::unique_ptr<LowBitExperts>> create(const Model& model, DType type);
  // What create() will allocate, for the memory planner.
  static Expected<int64_t> planned_bytes(const Model& model, DType type);

  const FfnWeights& weights(int64_t layer, int32_t expert) const {
    return weights_[static_cast<size_t>(layer * n_experts_ + expert)];
  }
  int64_t bytes() const { return bytes_; }

 private:
  int64_t n_experts_ = 0;
  std::vector<FfnWeights> weights_;             // [n_layers * n_experts]
  std::vector<HostBuffer> storage_;              // one buffer per matrix
  int64_t bytes_ = 0;
};

}  // namespace moenav
