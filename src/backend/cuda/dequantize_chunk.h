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

MOENAV_HOST_DEVICE inline float bits_to_float(uint32_t bits) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(bits);
#else
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
#endif
}

MOENAV_HOST_DEVICE inline float bf16_bits_to_float(uint16_t bits) {
  return bits_to_float(static_cast<uint32_t>(bits) << 16);
}

// level - offset as a float, exactly (level < 2^22, offset a small integer), without an
// int-to-float conversion, which the GPU issues at a quarter of the FP32 rate or less: level
// is the low mantissa of 2^23 + level, and the subtraction of two exact floats is exact.
MOENAV_HOST_DEVICE inline float level_minus(uint32_t level, float offset) {
  return bits_to_float(0x4B000000u | level) - (8388608.0f + offset);
}

// The 8 bytes at p, which is 2-byte aligned (the quantized blocks' qs): four 16-bit loads,
// through the read-only data path on the GPU.
MOENAV_HOST_DEVICE inline void load_8_bytes(const uint8_t* p, uint8_t (&out)[8]) {
  const auto* halves = reinterpret_cast<const unsigned short*>(p);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#ifdef __CUDA_ARCH__
    const unsigned short v = __ldg(halves + i);
#else
    const unsigned short v = halves[i];
#endif
    out[2 * i] = static_cast<uint8_t>(v & 0xFF), out[2 * i + 1] = static_cast<uint8_t>(v >> 8);
  }
}

// w[0..8) = elements [32 * chunk + 8 * quarter, + 8) of the row: the share of a chunk one of the
// four threads that read it together takes (the decode kernels' block_dot).
template <DType kType>
MOENAV_HOST_DEVICE inline void dequantize_quarter(const uint8_t* row, int64_t chunk, int quarter, float* w) {
  const int first = 8 * quarter;  // within the chunk
  if constexpr (kType == DType::F32) {
    const float4* p = reinterpret_cast<const float4*>(row) + chunk * 8 + 2 * quarter;
    const float4 a = p[0], b = p[1];
    w[0] = a.x, w[1] = a.y, w[2] = a.z, w[3] = a.w, w[4] = b.x, w[5] = b.y, w[6] = b.z, w[7] = b.w;
  } else if constexpr (kType == DType::F16 || kType == DType::BF16) {
    const uint4 bits = reinterpret_cast<const uint4*>(row)[chunk * 4 + quarter];  // 8 halves
    const uint32_t words[4] = {bits.x, bits.y, bits.z, bits.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const auto half = static_cast<uint16_t>(words[i / 2] >> (16 * (i % 2)));
      w[i] = kType == DType::F16 ? half_bits_to_float(half) : bf16_bits_to_float(half);
    }
  } else if constexpr (kType == DType::Q8_0) {
    const quant::BlockQ8_0& block = reinterpret_cast<const quant::BlockQ8_0*>(row)[chunk];
    const float d = half_bits_to_float(block.d);
    uint8_t q[8];
    load_8_bytes(reinterpret_cast<const uint8_t*>(block.qs) + first, q);
#pragma unroll
    for (int i = 0; i < 8; ++i) w[i] = d * level_minus(q[i] ^ 0x80u, 128.0f);  // int8 as level - 128
  } else if constexpr (kType == DType::Q4_0) {
    // Element i < 16 is byte i's low nibble, element 16 + i its high one.
    const quant::BlockQ4_0& block = reinterpret_cast<const quant::BlockQ4_0*>(row)[chunk];
    const float d = half_bits_to_float(block.d);
    uint8_t q[8];
    load_8_bytes(block.qs + 8 * (quarter % 2), q);
    const int shift = 4 * (quarter / 2);
#pragma unroll
    for (int i = 0; i < 8; ++i) w[i] = d * level_minus((q[i] >> shift) & 0xFu, 8.0f);
  } else if constexpr (kType == DType::Q4_K || kType == DType::Q5_K) {
    using Block = std::conditional_t<kType == DType::Q4_K, quant::BlockQ4_K, quant::BlockQ5_K>;
    const Block& block = reinterpret_cast<const Block*>(row)[chunk / 8];
    const int sub = static_cast<int>(chunk % 8);
    uint8_t scale, min;
    quant::unpack_scale_min_k4(sub, block.scales, &scale, &min);
    const float d = half_bits_to_float(block.d) * scale;
    const float m = half_bits_to_float(block.dmin) * min;
    uint8_t q[8];
    load_8_bytes(block.qs + 32 * (sub / 2) + first, q);
    const int shift = 4 * (sub & 1);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      uint32_t level = (q[i] >> shift) & 0xFu;
      if constexpr (kType == DType::Q5_K) level |= ((block.qh[first + i] >> sub) & 1u) << 4;
      w[i] = d * level_minus(level, 0.0f) - m;
    }
  } else if constexpr (kType == DType::Q6_K) {
    const quant::BlockQ6_K& block = reinterpret_cast<const quant::BlockQ6_K*>(row)[chunk / 8];
    const int half = static_cast<int>(chunk % 8) / 4;  // which 128 elements
    const int group = static_cast<int>(chunk % 4);     // which 32 of them
    uint8_t low[8], high[8];
    load_8_bytes(block.ql + 64 * half + 32 * (group & 1) + first, low);
    load_8_bytes(block.qh + 32 * half + first, high);
    const int low_shift = 4 * (group >> 1), high_shift = 2 * group;
    const float d = half_bits_to_float(block.d);
    const int8_t scale = block.scales[8 * half + 2 * group + quarter / 2];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const uint32_t level = ((low[i] >> low_shift) & 0xFu) | (((high[i] >> high_shift) & 3u) << 4);
      w[i] = d * scale * level_minus(level, 32.0f);
    }
  }
}

// w[0..32) = elements [32 * chunk, 32 * chunk + 32) of the row.
template <DType kType>
MOENAV_HOST_DEVICE inline void dequantize_chunk(const uint8_t* row, int64_t chunk, float* w) {
#pragma unroll
  for (int quarter = 0; quarter < 4; ++quarter) dequantize_quarter<kType>(row, chunk, quarter, w + 8 * quarter);
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
