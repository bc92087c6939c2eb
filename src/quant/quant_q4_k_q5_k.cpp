// Q4_K and Q5_K: super-blocks of 256 = 8 sub-blocks of 32, each with an affine fit
// x ~ d * sc * q - dmin * m, where the 8 (sc, m) pairs are 6-bit and d, dmin are fp16.
// The quantizer is ggml's reference one (quantize_row_q4_K_ref / q5_K_ref): a weighted scale/min
// search per sub-block, 6-bit quantization of the scales against the largest, then the levels
// re-derived from the rounded scales.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/blocks.h"
#include "quant/quant.h"
#include "quant/quant_impl.h"

// See quant_k_search.cpp: ggml's reference arithmetic has no FMA contraction.
#pragma GCC optimize("fp-contract=off")

namespace moenav::quant {
namespace {

constexpr int kSubBlocks = kSuperBlock / 32;

struct SuperBlockFit {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t levels[kSuperBlock];  // [0, max_level]
};

void pack_scale_min(int j, uint8_t scale, uint8_t min, uint8_t* packed) {
  if (j < 4) {
    packed[j] = scale;
    packed[j + 4] = min;
  } else {
    packed[j + 4] = static_cast<uint8_t>((scale & 0xF) | ((min & 0xF) << 4));
    packed[j - 4] |= static_cast<uint8_t>((scale >> 4) << 6);
    packed[j] |= static_cast<uint8_t>((min >> 4) << 6);
  }
}

// The shared Q4_K / Q5_K fit of one super-block x[256].
SuperBlockFit fit_super_block(const float* x, int max_level, float rmin, int nstep) {
  SuperBlockFit fit{};
  float scales[kSubBlocks];
  float mins[kSubBlocks];
  float max_scale = 0;
  float max_min = 0;
  for (int j = 0; j < kSubBlocks; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
    const float average = std::sqrt(sum_x2 / 32);
    float weights[32];
    for (int l = 0; l < 32; ++l) weights[l] = average + std::fabs(xs[l]);
    scales[j] = search_scale_min(32, max_level, xs, weights, fit.levels + 32 * j, &mins[j], rmin,
                                 0.1f, nstep, false);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inverse_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inverse_min = max_min > 0 ? 63.f / max_min : 0.f;
  for (int j = 0; j < kSubBlocks; ++j) {
    // uint8_t wrap-around then clamp, as ggml does.
    const uint8_t scale =
        std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inverse_scale * scales[j])));
    const uint8_t min =
        std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inverse_min * mins[j])));
    pack_scale_min(j, scale, min, fit.scales);
  }
  fit.d = fp32_to_fp16(max_scale / 63.f);
  fit.dmin = fp32_to_fp16(max_min / 63.f);
  for (int j = 0; j < kSubBlocks; ++j) {
    uint8_t scale, min;
    unpack_scale_min_k4(j, fit.scales, &scale, &min);
    const float d = fp16_to_fp32(fit.d) * scale;
    if (d == 0.0f) continue;  // keeps the search's levels, as ggml does
    const float dm = fp16_to_fp32(fit.dmin) * min;
    for (int i = 0; i < 32; ++i) {
      const int l = nearest_int((x[32 * j + i] + dm) / d);
      fit.levels[32 * j + i] = static_cast<uint8_t>(std::clamp(l, 0, max_level));
    }
  }
  return fit;
}

}  // namespace

void quantize_row_q4_k(const float* source, void* destination, int64_t n) {
  auto* blocks = static_cast<BlockQ4_K*>(destination);
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    const SuperBlockFit fit = fit_super_block(source + b * kSuperBlock, 15, -1.0f, 20);
    BlockQ4_K& block = blocks[b];
    block.d = fit.d;
    block.dmin = fit.dmin;
    std::memcpy(block.scales, fit.scales, sizeof(block.scales));
    for (int group = 0; group < 4; ++group) {  // 64 elements per group, 32 bytes
      const uint8_t* levels = fit.levels + 64 * group;
      for (int l = 0; l < 32; ++l) {
        block.qs[32 * group + l] = static_cast<uint8_t>(levels[l] | (levels[l + 32] << 4));
      }
    }
  }
}

void dequantize_row_q4_k(const void* source, float* destination, int64_t n) {
  const auto* blocks = static_cast<const BlockQ4_K*>(source);
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    const BlockQ4_K& block = blocks[b];
    const float d = fp16_to_fp32(block.d);
    const float dmin = fp16_to_fp32(block.dmin);
    float* y = destination + b * kSuperBlock;
    for (int group = 0; group < 4; ++group) {
      uint8_t scale, min;
      unpack_scale_min_k4(2 * group, block.scales, &scale, &min);
      const float d_low = d * scale, m_low = dmin * min;
      unpack_scale_min_k4(2 * group + 1, block.scales, &scale, &min);
      const float d_high = d * scale, m_high = dmin * min;
      const uint8_t* q = block.qs + 32 * group;
      for (int l = 0; l < 32; ++l) y[64 * group + l] = d_low * (q[l] & 0xF) - m_low;
      for (int l = 0; l < 32; ++l) y[64 * group + 32 + l] = d_high * (q[l] >> 4) - m_high;
    }
  }
}

void quantize_row_q5_k(const float* source, void* destination, int64_t n) {
  auto* blocks = static_cast<BlockQ5_K*>(destination);
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    const SuperBlockFit fit = fit_super_block(source + b * kSuperBlock, 31, -0.5f, 15);
    BlockQ5_K& block = blocks[b];
    block.d = fit.d;
    block.dmin = fit.dmin;
    std::memcpy(block.scales, fit.scales, sizeof(block.scales));
    std::memset(block.qh, 0, sizeof(block.qh));
    for (int group = 0; group < 4; ++group) {
      const uint8_t* levels = fit.levels + 64 * group;
      const uint8_t low_bit = static_cast<uint8_t>(1 << (2 * group));
      const uint8_t high_bit = static_cast<uint8_t>(2 << (2 * group));
      for (int l = 0; l < 32; ++l) {
        const int first = levels[l];
        const int second = levels[l + 32];
        if (first > 15) block.qh[l] |= low_bit;
        if (second > 15) block.qh[l] |= high_bit;
        block.qs[32 * group + l] = static_cast<uint8_t>((first & 0xF) | ((second & 0xF) << 4));
      }
    }
  }
}

void dequantize_row_q5_k(const void* source, float* destination, int64_t n) {
  const auto* blocks = static_cast<const BlockQ5_K*>(source);
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    const BlockQ5_K& block = blocks[b];
    const float d = fp16_to_fp32(block.d);
    const float dmin = fp16_to_fp32(block.dmin);
    float* y = destination + b * kSuperBlock;
    for (int group = 0; group < 4; ++group) {
      uint8_t scale, min;
      unpack_scale_min_k4(2 * group, block.scales, &scale, &min);
      const float d_low = d * scale, m_low = dmin * min;
      unpack_scale_min_k4(2 * group + 1, block.scales, &scale, &min);
      const float d_high = d * scale, m_high = dmin * min;
      const uint8_t* q = block.qs + 32 * group;
      const int low_bit = 1 << (2 * group), high_bit = 2 << (2 * group);
      for (int l = 0; l < 32; ++l) {
        y[64 * group + l] = d_low * ((q[l] & 0xF) + (block.qh[l] & low_bit ? 16 : 0)) - m_low;
      }
      for (int l = 0; l < 32; ++l) {
        y[64 * group + 32 + l] =
            d_high * ((q[l] >> 4) + (block.qh[l] & high_bit ? 16 : 0)) - m_high;
      }
    }
  }
}

}  // namespace moenav::quant
