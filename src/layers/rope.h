// Rotary position embedding, computed in float32 the way transformers does (inverse frequencies
// theta^(-2i/d), angle = position * inv_freq, cos/sin in float), so logits match the reference.
// YaRN (gpt-oss, long-context DeepSeek) blends interpolated and extrapolated frequencies over a
// ramp of dimensions and scales cos/sin by an attention factor.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model_config.h"

namespace moenav {

class Rope {
 public:
  Rope(int64_t head_dim, double theta, RopeStyle style, DType frequency_dtype = DType::F32);
  // Everything from the configuration: rotary_dim(), theta, style, frequency dtype, YaRN.
  explicit Rope(const ModelConfig& config);
  // Rotates x [n_heads, head_dim] (one token) in place for `position`.
  void apply(float* x, int64_t n_heads, int64_t position) const;
  // Rotates the first rotary-dim elements of n_heads heads that start `stride` floats apart.
  void apply(float* x, int64_t n_heads, int64_t stride, int64_t position) const;
  // YaRN's magnitude scale of cos/sin (1 otherwise).
  float attention_factor() const { return attention_factor_; }
  // theta^(-2i/d) per pair (YaRN-blended when configured); what the CUDA kernel is given.
  const std::vector<float>& inverse_frequency() const { return inverse_frequency_; }
  int64_t rotary_dim() const { return dim_; }
  RopeStyle style() const { return style_; }

 private:
  int64_t dim_;
  RopeStyle style_;
  float attention_factor_ = 1.0f;
  std::vector<float> inverse_frequency_;  // [dim / 2]
};

// DeepSeek's YaRN softmax-scale correction: mscale(factor, mscale_all_dim)^2 (1 without YaRN).
double yarn_softmax_scale(const ModelConfig& config);

}  // namespace moenav
