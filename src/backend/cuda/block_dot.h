// The decode kernels' inner loop (matmul's matvec, the selected experts): a few weight rows dotted
// with a few f32 input rows by one block of kDotThreads threads.
//
// Four threads share each chunk of 32 elements, a quarter each (dequantize_quarter), so a warp
// reads 8 consecutive chunks of every row at once: a Q4_0 row's 144 consecutive bytes, and 1 KiB
// of consecutive input, which all the block's rows then share (one read of the input a step, not
// one a row). The block's four warps take consecutive runs of chunks (split-K) and add up their
// sums through shared memory. The bound is the weight bytes over HBM bandwidth; the input stays
// in L1.
#pragma once

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/dequantize_chunk.h"

namespace moenav::cuda {

constexpr int kDotThreads = 128;

// totals[r * kTokens + t] = rows[r] . (x + t * cols) over `cols` elements, for t < n_tokens
// (<= kTokens); every thread of the block must call it, and every thread may read the totals
// (shared memory) after it returns. Rows and x rows are whole chunks; x is 16-byte aligned.
template <DType kType, int kRows, int kTokens>
__device__ inline const float* block_dot(const uint8_t* const (&rows)[kRows], int64_t cols, const float* x,
                                         int n_tokens) {
  constexpr int kWarps = kDotThreads / 32, kSums = kRows * kTokens;
  __shared__ float partial[kWarps][kSums];
  __shared__ float totals[kSums];
  const int thread = static_cast<int>(threadIdx.x), lane = thread % 32, warp = thread / 32;
  const int quarter = thread % 4;
  float acc[kRows][kTokens] = {};
  for (int64_t chunk = thread / 4; chunk < cols / kChunk; chunk += kDotThreads / 4) {
    float w[kRows][8];
#pragma unroll
    for (int r = 0; r < kRows; ++r) dequantize_quarter<kType>(rows[r], chunk, quarter, w[r]);
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (t >= n_tokens) break;
      const float4* in = reinterpret_cast<const float4*>(x + t * cols + chunk * kChunk + 8 * quarter);
      const float4 a = __ldg(in), b = __ldg(in + 1);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float* v = w[r];
        acc[r][t] += v[0] * a.x + v[1] * a.y + v[2] * a.z + v[3] * a.w + v[4] * b.x + v[5] * b.y +
                     v[6] * b.z + v[7] * b.w;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      const float sum = warp_sum(acc[r][t]);
      if (lane == 0) partial[warp][r * kTokens + t] = sum;
    }
  }
  __syncthreads();
  if (thread < kSums) {
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < kWarps; ++i) sum += partial[i][thread];
    totals[thread] = sum;
  }
  __syncthreads();
  return totals;
}

}  // namespace moenav::cuda
