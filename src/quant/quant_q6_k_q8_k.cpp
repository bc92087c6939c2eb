// Q6_K (16 sub-blocks of 16, int8 scales, 6-bit symmetric levels) and Q8_K (the k-quant
// activation format: float scale, int8 quants, per-16 sums). Quantizers follow ggml's
// quantize_row_q6_K_ref / q8_K_ref.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/blocks.h"
#include "quant/quant.h"
#include "quant/quant_impl.h"

// See quant_k_search.cpp: ggml's reference arithmetic has no FMA contraction.
#pragma GCC optimize("fp-contract=off")

namespace moenav::quant {

void quantize_row_q6_k(const float* source, void* destination, int64_t n) {
  auto* blocks = static_cast<BlockQ6_K*>(destination);
  constexpr int kSubBlocks = kSuperBlock / 16;
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    const float* x = source + b * kSuperBlock;
    BlockQ6_K& block = blocks[b];
    int8_t levels[kSuperBlock];  // [0, 63]
    float scales[kSubBlocks];
    float max_scale = 0;
    float max_abs_scale = 0;
    for (int j = 0; j < kSubBlocks; ++j) {
      scales[j] = search_scale_symmetric(16, 32, x + 16 * j, levels + 16 * j);
      if (std::fabs(scales[j]) > max_abs_scale) {
        max_abs_scale = std::fabs(scales[j]);
        max_scale = scales[j];
      }
    }
    if (max_abs_scale < kGroupMaxEps) {
      std::memset(&block, 0, sizeof(block));
      continue;
    }
    const float inverse_scale = -128.f / max_scale;
    block.d = fp32_to_fp16(1 / inverse_scale);
    for (int j = 0; j < kSubBlocks; ++j) {
      block.scales[j] = static_cast<int8_t>(std::min(127, nearest_int(inverse_scale * scales[j])));
    }
    for (int j = 0; j < kSubBlocks; ++j) {
      const float d = fp16_to_fp32(block.d) * block.scales[j];
      if (d == 0.0f) continue;  // keeps the search's levels, as ggml does
      for (int i = 0; i < 16; ++i) {
        const int l = nearest_int(x[16 * j + i] / d);
        levels[16 * j + i] = static_cast<int8_t>(std::clamp(l, -32, 31) + 32);
      }
    }
    for (int half = 0; half < 2; ++half) {  // 128 elements: 64 bytes of ql, 32 of qh
      const int8_t* L = levels + 128 * half;
      uint8_t* ql = block.ql + 64 * half;
      uint8_t* qh = block.qh + 32 * half;
      for (int l = 0; l < 32; ++l) {
        ql[l] = static_cast<uint8_t>((L[l] & 0xF) | ((L[l + 64] & 0xF) << 4));
        ql[l + 32] = static_cast<uint8_t>((L[l + 32] & 0xF) | ((L[l + 96] & 0xF) << 4));
        qh[l] = static_cast<uint8_t>((L[l] >> 4) | ((L[l + 32] >> 4) << 2) |
                                     ((L[l + 64] >> 4) << 4) | ((L[l + 96] >> 4) << 6));
      }
    }
  }
}

void dequantize_row_q6_k(const void* source, float* destination, int64_t n) {
  const auto* blocks = static_cast<const BlockQ6_K*>(source);
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    const BlockQ6_K& block = blocks[b];
    const float d = fp16_to_fp32(block.d);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = block.ql + 64 * half;
      const uint8_t* qh = block.qh + 32 * half;
      const int8_t* sc = block.scales + 8 * half;
      float* y = destination + b * kSuperBlock + 128 * half;
      for (int l = 0; l < 32; ++l) {
        const int s = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[s] * q1;
        y[l + 32] = d * sc[s + 2] * q2;
        y[l + 64] = d * sc[s + 4] * q3;
        y[l + 96] = d * sc[s + 6] * q4;
      }
    }
  }
}

void quantize_row_q8_k(const float* source, void* destination, int64_t n) {
  auto* blocks = static_cast<BlockQ8_K*>(destination);
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    const float* x = source + b * kSuperBlock;
    BlockQ8_K& block = blocks[b];
    float max = 0;
    float max_abs = 0;
    for (int j = 0; j < kSuperBlock; ++j) {
      if (std::fabs(x[j]) > max_abs) {
        max_abs = std::fabs(x[j]);
        max = x[j];
      }
    }
    if (max_abs == 0.0f) {
      std::memset(&block, 0, sizeof(block));
      continue;
    }
    // -127 (not -128): the extreme value maps to -127 whatever its sign, so every quant fits
    // the signed x unsigned byte products of the SIMD kernels.
    const float inverse_scale = -127.f / max;
    for (int j = 0; j < kSuperBlock; ++j) {
      block.qs[j] = static_cast<int8_t>(std::min(127, nearest_int(inverse_scale * x[j])));
    }
    for (int j = 0; j < kSuperBlock / 16; ++j) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) sum += block.qs[16 * j + i];
      block.bsums[j] = static_cast<int16_t>(sum);
    }
    block.d = 1 / inverse_scale;
  }
}

void dequantize_row_q8_k(const void* source, float* destination, int64_t n) {
  const auto* blocks = static_cast<const BlockQ8_K*>(source);
  for (int64_t b = 0; b < n / kSuperBlock; ++b) {
    for (int j = 0; j < kSuperBlock; ++j) {
      destination[b * kSuperBlock + j] = blocks[b].d * blocks[b].qs[j];
    }
  }
}

}  // namespace moenav::quant
