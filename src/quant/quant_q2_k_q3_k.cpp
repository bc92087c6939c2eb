// Q2_K and Q3_K, the 2- and 3-bit k-quants: 16 sub-blocks of 16. Q2_K is affine (4-bit scale and
// min per sub-block), Q3_K symmetric (6-bit signed scales). Quantizers follow ggml's
// quantize_row_q2_K_ref / q3_K_ref.
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

constexpr int kSubBlocks = kSuperBlock / 16;

// 2-bit levels of 256 elements: byte 32 * h + l holds elements 128 h + l + 32 s at bits 2 s.
void pack_2bit(const uint8_t* levels, uint8_t* qs) {
  for (int h = 0; h < 2; ++h) {
    const uint8_t* L = levels + 128 * h;
    for (int l = 0; l < 32; ++l) {
      qs[32 * h + l] =
          static_cast<uint8_t>(L[l] | (L[l + 32] << 2) | (L[l + 64] << 4) | (L[l + 96] << 6));
    }
  }
}

int level_2bit(const uint8_t* qs, int index) {
  const int h = index / 128, s = (index % 128) / 32, l = index % 32;
  return (qs[32 * h + l] >> (2 * s)) & 3;
}

// Q3_K's 16 6-bit scales (stored + 32) in 12 bytes: low nibbles in bytes 0-7 (sub-blocks 0-7
// low half, 8-15 high half), the top two bits in bytes 8-11.
int unpack_scale_q3(const uint8_t* packed, int j) {
  const int low = j < 8 ? packed[j] & 0xF : packed[j - 8] >> 4;
  const int high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | (high << 4)) - 32;
}

}  // namespace

void quantize_row_q2_k(const float* source, void* destination, int64_t n) {
  auto* blocks = static_cast<BlockQ2_K*>(destination);
  constexpr float kScaleLevels = 15.f;
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    const float* x = source + b * kSuperBlock;
    BlockQ2_K& block = blocks[b];
    uint8_t levels[kSuperBlock];
    float scales[kSubBlocks], mins[kSubBlocks];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < kSubBlocks; ++j) {
      float weights[16];
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = search_scale_min(16, 3, x + 16 * j, weights, levels + 16 * j, &mins[j], -0.5f,
                                   0.1f, 15, true);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
      const float inverse = kScaleLevels / max_scale;
      for (int j = 0; j < kSubBlocks; ++j)
        block.scales[j] = static_cast<uint8_t>(nearest_int(inverse * scales[j]));
      block.d = fp32_to_fp16(max_scale / kScaleLevels);
    } else {
      for (int j = 0; j < kSubBlocks; ++j) block.scales[j] = 0;
      block.d = fp32_to_fp16(0.f);
    }
    if (max_min > 0) {
      const float inverse = kScaleLevels / max_min;
      for (int j = 0; j < kSubBlocks; ++j)
        block.scales[j] |= static_cast<uint8_t>(nearest_int(inverse * mins[j]) << 4);
      block.dmin = fp32_to_fp16(max_min / kScaleLevels);
    } else {
      block.dmin = fp32_to_fp16(0.f);
    }
    for (int j = 0; j < kSubBlocks; ++j) {
      const float d = fp16_to_fp32(block.d) * (block.scales[j] & 0xF);
      if (d == 0.0f) continue;
      const float dm = fp16_to_fp32(block.dmin) * (block.scales[j] >> 4);
      for (int i = 0; i < 16; ++i) {
        const int l = nearest_int((x[16 * j + i] + dm) / d);
        levels[16 * j + i] = static_cast<uint8_t>(std::clamp(l, 0, 3));
      }
    }
    pack_2bit(levels, block.qs);
  }
}

void dequantize_row_q2_k(const void* source, float* destination, int64_t n) {
  const auto* blocks = static_cast<const BlockQ2_K*>(source);
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    const BlockQ2_K& block = blocks[b];
    const float d = fp16_to_fp32(block.d);
    const float dmin = fp16_to_fp32(block.dmin);
    float* y = destination + b * kSuperBlock;
    for (int i = 0; i < kSuperBlock; ++i) {
      const uint8_t sc = block.scales[i / 16];
      const float dl = d * (sc & 0xF), ml = dmin * (sc >> 4);
      y[i] = dl * level_2bit(block.qs, i) - ml;
    }
  }
}

void quantize_row_q3_k(const float* source, void* destination, int64_t n) {
  auto* blocks = static_cast<BlockQ3_K*>(destination);
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    const float* x = source + b * kSuperBlock;
    BlockQ3_K& block = blocks[b];
    int8_t signed_levels[kSuperBlock];  // [0, 7]
    float scales[kSubBlocks];
    float max_scale = 0, max_abs = 0;
    for (int j = 0; j < kSubBlocks; ++j) {
      scales[j] = search_scale_q3(16, 4, x + 16 * j, signed_levels + 16 * j);
      if (std::fabs(scales[j]) > max_abs) {
        max_abs = std::fabs(scales[j]);
        max_scale = scales[j];
      }
    }
    std::memset(block.scales, 0, sizeof(block.scales));
    if (max_scale != 0.0f) {
      const float inverse = -32.f / max_scale;
      for (int j = 0; j < kSubBlocks; ++j) {
        int8_t l = static_cast<int8_t>(nearest_int(inverse * scales[j]));
        l = static_cast<int8_t>(std::clamp<int>(l, -32, 31) + 32);
        if (j < 8) {
          block.scales[j] = static_cast<uint8_t>(l & 0xF);
        } else {
          block.scales[j - 8] |= static_cast<uint8_t>((l & 0xF) << 4);
        }
        block.scales[j % 4 + 8] |= static_cast<uint8_t>((l >> 4) << (2 * (j / 4)));
      }
      block.d = fp32_to_fp16(1 / inverse);
    } else {
      block.d = fp32_to_fp16(0.f);
    }
    for (int j = 0; j < kSubBlocks; ++j) {
      const float d = fp16_to_fp32(block.d) * unpack_scale_q3(block.scales, j);
      if (d == 0.0f) continue;
      for (int i = 0; i < 16; ++i) {
        const int l = nearest_int(x[16 * j + i] / d);
        signed_levels[16 * j + i] = static_cast<int8_t>(std::clamp(l, -4, 3) + 4);
      }
    }
    // High bit of element i in bit i / 32 of hmask[i % 32]; low two bits packed like Q2_K.
    std::memset(block.hmask, 0, sizeof(block.hmask));
    uint8_t levels[kSuperBlock];
    for (int i = 0; i < kSuperBlock; ++i) {
      int l = signed_levels[i];
      if (l > 3) {
        block.hmask[i % 32] |= static_cast<uint8_t>(1 << (i / 32));
        l -= 4;
      }
      levels[i] = static_cast<uint8_t>(l);
    }
    pack_2bit(levels, block.qs);
  }
}

void dequantize_row_q3_k(const void* source, float* destination, int64_t n) {
  const auto* blocks = static_cast<const BlockQ3_K*>(source);
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    const BlockQ3_K& block = blocks[b];
    const float d = fp16_to_fp32(block.d);
    float* y = destination + b * kSuperBlock;
    for (int i = 0; i < kSuperBlock; ++i) {
      const float dl = d * unpack_scale_q3(block.scales, i / 16);
      const int high = (block.hmask[i % 32] >> (i / 32)) & 1;
      y[i] = dl * (level_2bit(block.qs, i) - (high ? 0 : 4));
    }
  }
}

}  // namespace moenav::quant
