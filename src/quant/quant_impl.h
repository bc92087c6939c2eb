// Per-format row functions behind quant.h's quantize_row / dequantize_row switch. Internal to
// src/quant and its tests; callers use quant.h.
#pragma once

#include <cstdint>
#include <cstring>

namespace moenav::quant {

// Round to nearest, ties to even, for |value| < 2^22: adding 1.5 * 2^23 leaves the integer in the
// low mantissa bits. This is the rounding ggml's k-quant and Q8_K quantizers use (nearest_int);
// matching it (instead of roundf, ties away from zero) is what makes the output bit-compatible.
inline int nearest_int(float value) {
  const float shifted = value + 12582912.f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof(bits));
  return (bits & 0x007FFFFF) - 0x00400000;
}

// ggml's GROUP_MAX_EPS: a group whose largest magnitude is below this quantizes to zeros.
constexpr float kGroupMaxEps = 1e-15f;
constexpr int kMaxSearchLength = 32;  // longest group the scale searches handle

// Scale searches of the k-quant reference quantizers (quant_k_search.cpp).
// Affine levels in [0, max_level] with weights; returns the scale, stores -min (>= 0).
float search_scale_min(int n, int max_level, const float* x, const float* weights, uint8_t* levels,
                       float* negated_min, float rmin, float rdelta, int nstep, bool use_abs_error);
// Symmetric levels l + max_level, l in [-max_level, max_level - 1], x*x weighted (Q6_K).
float search_scale_symmetric(int n, int max_level, const float* x, int8_t* levels);
// The same with single-level refinement passes (Q3_K).
float search_scale_q3(int n, int max_level, const float* x, int8_t* levels);

void quantize_row_f32(const float* source, void* destination, int64_t n);
void dequantize_row_f32(const void* source, float* destination, int64_t n);
void quantize_row_f16(const float* source, void* destination, int64_t n);
void dequantize_row_f16(const void* source, float* destination, int64_t n);
void quantize_row_bf16(const float* source, void* destination, int64_t n);
void dequantize_row_bf16(const void* source, float* destination, int64_t n);

void quantize_row_q8_0(const float* source, void* destination, int64_t n);
void dequantize_row_q8_0(const void* source, float* destination, int64_t n);
void quantize_row_q4_0(const float* source, void* destination, int64_t n);
void dequantize_row_q4_0(const void* source, float* destination, int64_t n);

void quantize_row_q8_k(const float* source, void* destination, int64_t n);
void dequantize_row_q8_k(const void* source, float* destination, int64_t n);
void quantize_row_q4_k(const float* source, void* destination, int64_t n);
void dequantize_row_q4_k(const void* source, float* destination, int64_t n);
void quantize_row_q5_k(const float* source, void* destination, int64_t n);
void dequantize_row_q5_k(const void* source, float* destination, int64_t n);
void quantize_row_q6_k(const float* source, void* destination, int64_t n);
void dequantize_row_q6_k(const void* source, float* destination, int64_t n);
void quantize_row_q2_k(const float* source, void* destination, int64_t n);
void dequantize_row_q2_k(const void* source, float* destination, int64_t n);
void quantize_row_q3_k(const float* source, void* destination, int64_t n);
void dequantize_row_q3_k(const void* source, float* destination, int64_t n);

}  // namespace moenav::quant
