// Scalar reference (de)quantization of one row, bit-compatible with ggml's block layouts.
// These are the ground truth the SIMD kernels in backend/cpu are tested against.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace moenav::quant {

// n must be a multiple of the type's block size. F32, F16 and BF16 are supported too.
void quantize_row(DType type, const float* source, void* destination, int64_t n);
void dequantize_row(DType type, const void* source, float* destination, int64_t n);

// Whether quantize_row supports this type as a weight format (Q8_K is an activation format:
// quantize_row accepts it, can_quantize says false).
bool can_quantize(DType type);
// Whether dequantize_row supports this type.
bool can_dequantize(DType type);

// The activation format a weight type's integer dot product uses (Q8_0 for Q8_0/Q4_0, Q8_K for
// k-quants); F32 for float weight types (dot in float).
DType activation_type_for(DType weight_type);

float fp16_to_fp32(uint16_t value);
uint16_t fp32_to_fp16(float value);
float bf16_to_fp32(uint16_t value);
uint16_t fp32_to_bf16(float value);  // round to nearest even, like PyTorch

}  // namespace moenav::quant
