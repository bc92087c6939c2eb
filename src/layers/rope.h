// Rotary position embedding, computed in float32 the way transformers does (inverse frequencies
// theta^(-2i/d), angle = position * inv_freq, cos/sin in float), so logits match the reference.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model_config.h"

namespace moenav {

class Rope {
 public:
  Rope(int64_t head_dim, double theta, RopeStyle style, DType frequency_dtype = DType::F32);
  // Rotates x [n_heads, head_dim] (one token) in place for `position`.
  void apply(float* x, int64_t n_heads, int64_t position) const;

 private:
  int64_t head_dim_;
  RopeStyle style_;
  std::vector<float> inverse_frequency_;  // [head_dim / 2]
};

}  // namespace moenav
