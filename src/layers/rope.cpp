#include "layers/rope.h"

#include <cmath>

#include "quant/quant.h"

namespace moenav {

Rope::Rope(int64_t head_dim, double theta, RopeStyle style, DType frequency_dtype)
    : head_dim_(head_dim), style_(style) {
  inverse_frequency_.resize(static_cast<size_t>(head_dim / 2));
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    float frequency = 1.0f / std::pow(static_cast<float>(theta), exponent);
    if (frequency_dtype == DType::BF16) frequency = quant::bf16_to_fp32(quant::fp32_to_bf16(frequency));
    if (frequency_dtype == DType::F16) frequency = quant::fp16_to_fp32(quant::fp32_to_fp16(frequency));
    inverse_frequency_[static_cast<size_t>(i)] = frequency;
  }
}

void Rope::apply(float* x, int64_t n_heads, int64_t position) const {
  const int64_t half = head_dim_ / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float angle = static_cast<float>(position) * inverse_frequency_[static_cast<size_t>(i)];
    const float cosine = std::cos(angle);
    const float sine = std::sin(angle);
    // NeoX pairs (i, i + d/2); interleaved pairs (2i, 2i + 1).
    const int64_t first = style_ == RopeStyle::Neox ? i : 2 * i;
    const int64_t second = style_ == RopeStyle::Neox ? i + half : 2 * i + 1;
    for (int64_t head = 0; head < n_heads; ++head) {
      float* h = x + head * head_dim_;
      const float a = h[first];
      const float b = h[second];
      h[first] = a * cosine - b * sine;
      h[second] = b * cosine + a * sine;
    }
  }
}

}  // namespace moenav
