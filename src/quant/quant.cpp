// quant.h's entry points: one table row per dtype, so adding a format is adding a row.
#include "quant/quant.h"

#include <array>

#include "core/check.h"
#include "quant/quant_impl.h"

namespace moenav::quant {
namespace {

using QuantizeFn = void (*)(const float*, void*, int64_t);
using DequantizeFn = void (*)(const void*, float*, int64_t);

struct RowFunctions {
  QuantizeFn quantize = nullptr;
  DequantizeFn dequantize = nullptr;
  DType activation = DType::F32;
};

constexpr std::array<RowFunctions, static_cast<size_t>(DType::Count)> kRowFunctions = {{
    {quantize_row_f32, dequantize_row_f32, DType::F32},     // F32
    {quantize_row_f16, dequantize_row_f16, DType::F32},     // F16
    {quantize_row_bf16, dequantize_row_bf16, DType::F32},   // BF16
    {quantize_row_q8_0, dequantize_row_q8_0, DType::Q8_0},  // Q8_0
    {quantize_row_q4_0, dequantize_row_q4_0, DType::Q8_0},  // Q4_0
    {quantize_row_q4_k, dequantize_row_q4_k, DType::Q8_K},  // Q4_K
    {quantize_row_q5_k, dequantize_row_q5_k, DType::Q8_K},  // Q5_K
    {quantize_row_q6_k, dequantize_row_q6_k, DType::Q8_K},  // Q6_K
    {quantize_row_q2_k, dequantize_row_q2_k, DType::Q8_K},  // Q2_K
    {quantize_row_q3_k, dequantize_row_q3_k, DType::Q8_K},  // Q3_K
    {quantize_row_q8_k, dequantize_row_q8_k, DType::Q8_K},  // Q8_K
    {},                                                     // I8
    {},                                                     // I16
    {},                                                     // I32
    {},                                                     // I64
    {},                                                     // F64
}};

const RowFunctions& functions_for(DType type) {
  MOENAV_CHECK(type < DType::Count);
  return kRowFunctions[static_cast<size_t>(type)];
}

}  // namespace

void quantize_row(DType type, const float* source, void* destination, int64_t n) {
  const RowFunctions& functions = functions_for(type);
  MOENAV_CHECK(functions.quantize != nullptr);
  MOENAV_CHECK(row_size_valid(type, n));
  functions.quantize(source, destination, n);
}

void dequantize_row(DType type, const void* source, float* destination, int64_t n) {
  const RowFunctions& functions = functions_for(type);
  MOENAV_CHECK(functions.dequantize != nullptr);
  MOENAV_CHECK(row_size_valid(type, n));
  functions.dequantize(source, destination, n);
}

bool can_quantize(DType type) {
  return type < DType::Count && functions_for(type).quantize != nullptr && type != DType::Q8_K;
}

bool can_dequantize(DType type) {
  return type < DType::Count && functions_for(type).dequantize != nullptr;
}

DType activation_type_for(DType weight_type) { return functions_for(weight_type).activation; }

}  // namespace moenav::quant
