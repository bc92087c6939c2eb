// Dequantization of one chunk of 32 consecutive row elements for every weight type the CUDA
// matmul reads, in the block formats of quant/blocks.h. Host-callable too, so that
// tests/ops/test_cuda_dequantize.cu checks the bit layouts against quant::dequantize_row on any
// machine with nvcc, GPU or not.
#pragma once

#include <cuda_fp16.h>
#include <vector_types.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "backend/cuda_ops.h"
#include "core/dtype.h"
#include "moenav/status.h"
#include "quant/blocks.h"

namespace moenav::cuda {

constexpr int kChunk = 32;

MOENAV_HOST_DEVICE inline float half_bits_to_float(uint16_t bits) {
  return __half2float(__ushort_as_half(bits));
}

MOENAV_HOST_DEVICE inline float bf16_bits_to_float(uint16_t bits) {
  const uint32_t widened = static_cast<uint32_t>(bits) << 16;
#ifdef __CUDA_ARCH__
  return __uint_as_float(widened);
#else
  float value;
  std::memcpy(&value, &widened, sizeof(value));
  return value;
#endif
}

// w[0..32) = elements [32 * chunk, 32 * chunk + 32) of the row.
template <DType kType>
MOENAV_HOST_DEVICE inline void dequantize_chunk(const uint8_t* row, int64_t chunk, float* w) {
  if constexpr (kType == DType::F32) {
    const float4* p = reinterpret_cast<const float4*>(row) + chunk * 8;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float4 v = p[i];
      w[4 * i] = v.x, w[4 * i + 1] = v.y, w[4 * i + 2] = v.z, w[4 * i + 3] = v.w;
    }
  } else if constexpr (kType == DType::F16 || kType == DType::BF16) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(row) + chunk * kChunk;
#pragma unroll
    for (int i = 0; i < kChunk; ++i)
      w[i] = kType == DType::F16 ? half_bits_to_float(p[i]) : bf16_bits_to_float(p[i]);
  } else if constexpr (kType == DType::Q8_0) {
    const quant::BlockQ8_0& block = reinterpret_cast<const quant::BlockQ8_0*>(row)[chunk];
    const float d = half_bits_to_float(block.d);
#pragma unroll
    for (int i = 0; i < kChunk; ++i) w[i] = d * block.qs[i];
  } else if constexpr (kType == DType::Q4_0) {
    const quant::BlockQ4_0& block = reinterpret_cast<const quant::BlockQ4_0*>(row)[chunk];
    const float d = half_bits_to_float(block.d);
#pragma unroll
    for (int i = 0; i < kChunk / 2; ++i) {
      w[i] = d * ((block.qs[i] & 0xF) - 8);
      w[i + 16] = d * ((block.qs[i] >> 4) - 8);
    }
  } else if constexpr (kType == DType::Q4_K || kType == DType::Q5_K) {
    using Block = std::conditional_t<kType == DType::Q4_K, quant::BlockQ4_K, quant::BlockQ5_K>;
    const Block& block = reinterpret_cast<const Block*>(row)[chunk / 8];
    const int sub = static_cast<int>(chunk % 8);
    uint8_t scale, min;
    quant::unpack_scale_min_k4(sub, block.scales, &scale, &min);
    const float d = half_bits_to_float(block.d) * scale;
    const float m = half_bits_to_float(block.dmin) * min;
    const uint8_t* q = block.qs + 32 * (sub / 2);
    const int shift = 4 * (sub & 1);
#pragma unroll
    for (int l = 0; l < kChunk; ++l) {
      int level = (q[l] >> shift) & 0xF;
      if constexpr (kType == DType::Q5_K) level += ((block.qh[l] >> sub) & 1) << 4;
      w[l] = d * level - m;
    }
  } else if constexpr (kType == DType::Q6_K) {
    const quant::BlockQ6_K& block = reinterpret_cast<const quant::BlockQ6_K*>(row)[chunk / 8];
    const int half = static_cast<int>(chunk % 8) / 4;  // which 128 elements
    const int quarter = static_cast<int>(chunk % 4);   // which 32 of them
    const uint8_t* ql = block.ql + 64 * half + 32 * (quarter & 1);
    const uint8_t* qh = block.qh + 32 * half;
    const int8_t* scales = block.scales + 8 * half + 2 * quarter;
    const int low_shift = 4 * (quarter >> 1), high_shift = 2 * quarter;
    const float d = half_bits_to_float(block.d);
#pragma unroll
    for (int l = 0; l < kChunk; ++l) {
      const int level = (((ql[l] >> low_shift) & 0xF) | (((qh[l] >> high_shift) & 3) << 4)) - 32;
      w[l] = d * scales[l / 16] * level;
    }
  }
}

// run(std::integral_constant<DType, type>{}) for a weight type matmul_supported accepts (the
// kernels' dispatch on the weight format).
template <typename Run>
auto with_weight_type(DType type, Run&& run) -> decltype(run(std::integral_constant<DType, DType::F32>{})) {
  switch (type) {
    case DType::F32: return run(std::integral_constant<DType, DType::F32>{});
    case DType::F16: return run(std::integral_constant<DType, DType::F16>{});
    case DType::BF16: return run(std::integral_constant<DType, DType::BF16>{});
    case DType::Q8_0: return run(std::integral_constant<DType, DType::Q8_0>{});
    case DType::Q4_0: return run(std::integral_constant<DType, DType::Q4_0>{});
    case DType::Q4_K: return run(std::integral_constant<DType, DType::Q4_K>{});
    case DType::Q5_K: return run(std::integral_constant<DType, DType::Q5_K>{});
    case DType::Q6_K: return run(std::integral_constant<DType, DType::Q6_K>{});
    default: break;
  }
  return Status::errorf("CUDA matmul: weight type {} is not supported", dtype_name(type));
}

// Whether the expert kernels (`kernel`: selected or grouped) read `what` of this shape: rows of
// whole chunks of a matmul type.
inline Status check_chunked_rows(const DeviceWeight& shape, const char* kernel, const char* what) {
  if (!matmul_supported(shape.dtype) || shape.cols % kChunk != 0 || !row_size_valid(shape.dtype, shape.cols)) {
    return Status::errorf("CUDA {} experts: {} of {} rows of {} elements (whole chunks of 32 of a matmul type "
                          "needed)", kernel, what, dtype_name(shape.dtype), shape.cols);
  }
  return ok_status();
}

// Whether the expert kernels read gate and up: rows of whole chunks, up shaped as gate.
inline Status check_gate_up(const ExpertTables& tables, const char* kernel) {
  MOENAV_RETURN_IF_ERROR(check_chunked_rows(tables.gate, kernel, "gate"));
  const DeviceWeight &gate = tables.gate, &up = tables.up;
  if (up.dtype != gate.dtype || up.rows != gate.rows || up.cols != gate.cols) {
    return Status::errorf("CUDA {} experts: the up projection's shape or type differs from the gate's", kernel);
  }
  return ok_status();
}

}  // namespace moenav::cuda
