#include "layers/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "quant/quant.h"

namespace moenav {
namespace {

float round_to(DType dtype, float value) {
  if (dtype == DType::BF16) return quant::bf16_to_fp32(quant::fp32_to_bf16(value));
  if (dtype == DType::F16) return quant::fp16_to_fp32(quant::fp32_to_fp16(value));
  return value;
}

double yarn_mscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// The dimension whose wavelength makes `rotations` turns over the original context.
double correction_dim(double rotations, int64_t dim, double base, double context) {
  return static_cast<double>(dim) * std::log(context / (rotations * 2.0 * std::numbers::pi)) /
         (2.0 * std::log(base));
}

}  // namespace

Rope::Rope(int64_t head_dim, double theta, RopeStyle style, DType frequency_dtype)
    : dim_(head_dim), style_(style) {
  inverse_frequency_.resize(static_cast<size_t>(head_dim / 2));
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float frequency = 1.0f / std::pow(static_cast<float>(theta), exponent);
    inverse_frequency_[static_cast<size_t>(i)] = round_to(frequency_dtype, frequency);
  }
}

Rope::Rope(const ModelConfig& config)
    : Rope(config.rotary_dim(), config.rope_theta, config.rope_style, config.rope_frequency_dtype) {
  if (config.rope_scaling != RopeScaling::Yarn) return;
  const int64_t half = dim_ / 2;
  const float factor = static_cast<float>(config.rope_factor);
  const double context = static_cast<double>(
      config.rope_original_context > 0 ? config.rope_original_context : config.context_length);
  double low = correction_dim(config.yarn_beta_fast, dim_, config.rope_theta, context);
  double high = correction_dim(config.yarn_beta_slow, dim_, config.rope_theta, context);
  if (config.yarn_truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim_ - 1));
  if (low == high) high += 0.001;  // the ramp needs a width
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim_);
    const float position_frequency = std::pow(static_cast<float>(config.rope_theta), exponent);
    const float extrapolation = 1.0f / position_frequency;
    const float interpolation = 1.0f / (factor * position_frequency);
    const float ramp = std::clamp(
        (static_cast<float>(i) - static_cast<float>(low)) / static_cast<float>(high - low), 0.0f,
        1.0f);
    const float extrapolation_weight = 1.0f - ramp;
    const float frequency =
        interpolation * (1.0f - extrapolation_weight) + extrapolation * extrapolation_weight;
    inverse_frequency_[static_cast<size_t>(i)] = round_to(config.rope_frequency_dtype, frequency);
  }
  double attention = config.yarn_attention_factor;
  if (attention <= 0.0) {
    attention = config.yarn_mscale > 0.0 && config.yarn_mscale_all_dim > 0.0
                    ? yarn_mscale(config.rope_factor, config.yarn_mscale) /
                          yarn_mscale(config.rope_factor, config.yarn_mscale_all_dim)
                    : yarn_mscale(config.rope_factor, 1.0);
  }
  attention_factor_ = static_cast<float>(attention);
}

void Rope::apply(float* x, int64_t n_heads, int64_t position) const {
  apply(x, n_heads, dim_, position);
}

void Rope::apply(float* x, int64_t n_heads, int64_t stride, int64_t position) const {
  const int64_t half = dim_ / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float angle = static_cast<float>(position) * inverse_frequency_[static_cast<size_t>(i)];
    const float cosine = std::cos(angle) * attention_factor_;
    const float sine = std::sin(angle) * attention_factor_;
    // NeoX pairs (i, i + d/2); interleaved pairs (2i, 2i + 1).
    const int64_t first = style_ == RopeStyle::Neox ? i : 2 * i;
    const int64_t second = style_ == RopeStyle::Neox ? i + half : 2 * i + 1;
    for (int64_t head = 0; head < n_heads; ++head) {
      float* h = x + head * stride;
      const float a = h[first];
      const float b = h[second];
      h[first] = a * cosine - b * sine;
      h[second] = b * cosine + a * sine;
    }
  }
}

double yarn_softmax_scale(const ModelConfig& config) {
  if (config.rope_scaling != RopeScaling::Yarn || config.yarn_mscale_all_dim <= 0.0) return 1.0;
  const double mscale = yarn_mscale(config.rope_factor, config.yarn_mscale_all_dim);
  return mscale * mscale;
}

}  // namespace moenav
