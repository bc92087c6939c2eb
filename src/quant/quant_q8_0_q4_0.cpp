// Q8_0 and Q4_0, the 32-element block formats: one fp16 scale per block. The quantizers follow
// ggml's reference ones (quantize_row_q8_0_ref / q4_0_ref) step for step, including their
// rounding (roundf for Q8_0, truncation of x + 8.5 for Q4_0), so re-quantizing a dequantized
// llama.cpp tensor reproduces its blocks.
#include <algorithm>
#include <cmath>

#include "quant/blocks.h"
#include "quant/quant.h"
#include "quant/quant_impl.h"

namespace moenav::quant {

void quantize_row_q8_0(const float* source, void* destination, int64_t n) {
  auto* blocks = static_cast<BlockQ8_0*>(destination);
  for (int64_t b = 0; b < n / kBlockQ8_0; ++b) {
    const float* x = source + b * kBlockQ8_0;
    float max_abs = 0.0f;
    for (int j = 0; j < kBlockQ8_0; ++j) max_abs = std::max(max_abs, std::fabs(x[j]));
    const float scale = max_abs / 127.0f;
    const float inverse = scale != 0.0f ? 1.0f / scale : 0.0f;
    blocks[b].d = fp32_to_fp16(scale);
    for (int j = 0; j < kBlockQ8_0; ++j) {
      blocks[b].qs[j] = static_cast<int8_t>(std::round(x[j] * inverse));
    }
  }
}

void dequantize_row_q8_0(const void* source, float* destination, int64_t n) {
  const auto* blocks = static_cast<const BlockQ8_0*>(source);
  for (int64_t b = 0; b < n / kBlockQ8_0; ++b) {
    const float scale = fp16_to_fp32(blocks[b].d);
    float* y = destination + b * kBlockQ8_0;
    for (int j = 0; j < kBlockQ8_0; ++j) y[j] = blocks[b].qs[j] * scale;
  }
}

void quantize_row_q4_0(const float* source, void* destination, int64_t n) {
  auto* blocks = static_cast<BlockQ4_0*>(destination);
  constexpr int kHalf = kBlockQ8_0 / 2;
  for (int64_t b = 0; b < n / kBlockQ8_0; ++b) {
    const float* x = source + b * kBlockQ8_0;
    // The signed value of largest magnitude (first one on ties) maps to -8, the one level that
    // has no positive twin.
    float max_abs = 0.0f;
    float extreme = 0.0f;
    for (int j = 0; j < kBlockQ8_0; ++j) {
      if (max_abs < std::fabs(x[j])) {
        max_abs = std::fabs(x[j]);
        extreme = x[j];
      }
    }
    const float scale = extreme / -8.0f;
    const float inverse = scale != 0.0f ? 1.0f / scale : 0.0f;
    blocks[b].d = fp32_to_fp16(scale);
    for (int j = 0; j < kHalf; ++j) {
      const int low = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * inverse + 8.5f)));
      const int high =
          std::min(15, static_cast<int>(static_cast<int8_t>(x[kHalf + j] * inverse + 8.5f)));
      blocks[b].qs[j] = static_cast<uint8_t>(low | (high << 4));
    }
  }
}

void dequantize_row_q4_0(const void* source, float* destination, int64_t n) {
  const auto* blocks = static_cast<const BlockQ4_0*>(source);
  constexpr int kHalf = kBlockQ8_0 / 2;
  for (int64_t b = 0; b < n / kBlockQ8_0; ++b) {
    const float scale = fp16_to_fp32(blocks[b].d);
    float* y = destination + b * kBlockQ8_0;
    for (int j = 0; j < kHalf; ++j) {
      y[j] = ((blocks[b].qs[j] & 0x0F) - 8) * scale;
      y[kHalf + j] = ((blocks[b].qs[j] >> 4) - 8) * scale;
    }
  }
}

}  // namespace moenav::quant
