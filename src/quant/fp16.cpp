// Half-precision conversions (IEEE fp16 and bfloat16) and the rows of the plain float formats.
// Written with integer bit manipulation so the results do not depend on F16C or AVX-512 BF16
// being present: these are the reference the SIMD conversions in backend/cpu are checked against.
#include <bit>
#include <cstdint>
#include <cstring>

#include "quant/quant.h"
#include "quant/quant_impl.h"

namespace moenav::quant {

float fp16_to_fp32(uint16_t value) {
  const uint32_t sign = static_cast<uint32_t>(value & 0x8000) << 16;
  const uint32_t exponent = (value >> 10) & 0x1F;
  uint32_t mantissa = value & 0x3FF;
  if (exponent == 0x1F) return std::bit_cast<float>(sign | 0x7F800000 | (mantissa << 13));
  if (exponent != 0)
    return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
  if (mantissa == 0) return std::bit_cast<float>(sign);
  // Subnormal half: mantissa * 2^-24, exact in float.
  const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
  return sign ? -magnitude : magnitude;
}

uint16_t fp32_to_fp16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t magnitude = bits & 0x7FFFFFFF;
  if (magnitude > 0x7F800000) {  // NaN: keep the top payload bits, force quiet
    return static_cast<uint16_t>(sign | 0x7E00 | ((magnitude >> 13) & 0x3FF));
  }
  if (magnitude >= 0x47800000) return sign | 0x7C00;                    // >= 65536 (and inf): inf
  if (magnitude >= 0x38800000) {                                        // normal half (>= 2^-14)
    const uint32_t rebased = magnitude - 0x38000000;                    // exponent bias 127 -> 15
    const uint32_t rounding = 0xFFF + ((rebased >> 13) & 1);            // to nearest, ties to even
    return static_cast<uint16_t>(sign | ((rebased + rounding) >> 13));  // may carry into inf
  }
  if (magnitude < 0x33000000) return sign;  // <= 2^-25 after rounding: zero
  // Subnormal half: count units of 2^-24, rounding to nearest even.
  const uint32_t exponent = magnitude >> 23;
  const uint32_t mantissa = (magnitude & 0x7FFFFF) | 0x800000;
  const uint32_t shift = 126 - exponent;  // 14..24
  uint32_t units = mantissa >> shift;
  const uint32_t remainder = mantissa & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (remainder > half || (remainder == half && (units & 1))) ++units;
  return static_cast<uint16_t>(sign | units);
}

float bf16_to_fp32(uint16_t value) {
  return std::bit_cast<float>(static_cast<uint32_t>(value) << 16);
}

uint16_t fp32_to_bf16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7FFFFFFF) > 0x7F800000) return 0x7FC0;  // canonical quiet NaN, as PyTorch
  const uint32_t rounding = 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

void quantize_row_f32(const float* source, void* destination, int64_t n) {
  std::memcpy(destination, source, static_cast<size_t>(n) * sizeof(float));
}
void dequantize_row_f32(const void* source, float* destination, int64_t n) {
  std::memcpy(destination, source, static_cast<size_t>(n) * sizeof(float));
}

void quantize_row_f16(const float* source, void* destination, int64_t n) {
  auto* out = static_cast<uint16_t*>(destination);
  for (int64_t i = 0; i < n; ++i) out[i] = fp32_to_fp16(source[i]);
}
void dequantize_row_f16(const void* source, float* destination, int64_t n) {
  const auto* in = static_cast<const uint16_t*>(source);
  for (int64_t i = 0; i < n; ++i) destination[i] = fp16_to_fp32(in[i]);
}

void quantize_row_bf16(const float* source, void* destination, int64_t n) {
  auto* out = static_cast<uint16_t*>(destination);
  for (int64_t i = 0; i < n; ++i) out[i] = fp32_to_bf16(source[i]);
}
void dequantize_row_bf16(const void* source, float* destination, int64_t n) {
  const auto* in = static_cast<const uint16_t*>(source);
  for (int64_t i = 0; i < n; ++i) destination[i] = bf16_to_fp32(in[i]);
}

}  // namespace moenav::quant
