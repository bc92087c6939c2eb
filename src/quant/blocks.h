// Byte layouts of ggml's block-quantized formats, shared by the reference (de)quantizers in
// src/quant and the SIMD dot kernels in src/backend/cpu. Every struct is bit-compatible with
// ggml-common.h, so tensors from llama.cpp GGUF files are used in place.
//
// Legend: d = super/block scale (fp16 unless noted), dmin = scale of the sub-block minimums,
// qs/ql = low bits of the quants, qh = high bits, scales = packed sub-block scales (and mins).
#pragma once

#include <cstdint>

// Callable from CUDA kernels too (src/backend/cuda reads the same blocks).
#ifdef __CUDACC__
#define MOENAV_HOST_DEVICE __host__ __device__
#else
#define MOENAV_HOST_DEVICE
#endif

namespace moenav::quant {

constexpr int kBlockQ8_0 = 32;    // Q8_0, Q4_0 block size
constexpr int kSuperBlock = 256;  // k-quant super-block size (ggml's QK_K)

// Q8_0: x = d * q, q in [-127, 127].
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kBlockQ8_0];
};
static_assert(sizeof(BlockQ8_0) == 34);

// Q4_0: x = d * (q - 8), q in [0, 15]; qs[j] holds element j (low nibble) and j + 16 (high).
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kBlockQ8_0 / 2];
};
static_assert(sizeof(BlockQ4_0) == 18);

// Q4_K: 8 sub-blocks of 32; x = d * sc[j] * q - dmin * m[j], q in [0, 15], sc/m 6-bit packed in
// scales[12] (see unpack_scale_min_k4). qs: 4 groups of 64 elements, 32 bytes each, low nibble =
// first 32, high nibble = next 32.
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[kSuperBlock / 2];
};
static_assert(sizeof(BlockQ4_K) == 144);

// Q5_K: Q4_K plus a fifth bit per element in qh (bit 2*g of qh[l] for element 64*g + l, bit
// 2*g + 1 for element 64*g + 32 + l); q in [0, 31].
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kSuperBlock / 8];
  uint8_t qs[kSuperBlock / 2];
};
static_assert(sizeof(BlockQ5_K) == 176);

// Q6_K: 16 sub-blocks of 16; x = d * scales[j] * (q - 32), q in [0, 63], scales int8.
// Two halves of 128 elements; in each, ql[l] / ql[l + 32] hold low nibbles of elements l, l + 64
// / l + 32, l + 96 and qh[l] the high 2 bits of l, l + 32, l + 64, l + 96.
struct BlockQ6_K {
  uint8_t ql[kSuperBlock / 2];
  uint8_t qh[kSuperBlock / 4];
  int8_t scales[kSuperBlock / 16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210);

// Q2_K: 16 sub-blocks of 16; x = d * (scales[j] & 15) * q - dmin * (scales[j] >> 4), q in [0, 3].
struct BlockQ2_K {
  uint8_t scales[kSuperBlock / 16];
  uint8_t qs[kSuperBlock / 4];
  uint16_t d;
  uint16_t dmin;
};
static_assert(sizeof(BlockQ2_K) == 84);

// Q3_K: 16 sub-blocks of 16; x = d * (sc[j] - 32) * (q - 4 * !hbit), sc 6-bit packed in 12 bytes.
struct BlockQ3_K {
  uint8_t hmask[kSuperBlock / 8];
  uint8_t qs[kSuperBlock / 4];
  uint8_t scales[12];
  uint16_t d;
};
static_assert(sizeof(BlockQ3_K) == 110);

// Q8_K: activation format of k-quant dot products; d is float32 and bsums[j] is the sum of the
// 16 quants j*16 .. j*16+15 (used to apply the sub-block minimums without a second pass).
struct BlockQ8_K {
  float d;
  int8_t qs[kSuperBlock];
  int16_t bsums[kSuperBlock / 16];
};
static_assert(sizeof(BlockQ8_K) == 292);

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K super-block.
MOENAV_HOST_DEVICE inline void unpack_scale_min_k4(int j, const uint8_t* scales, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = scales[j] & 63;
    *min = scales[j + 4] & 63;
  } else {
    *scale = (scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4);
    *min = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
  }
}

}  // namespace moenav::quant
