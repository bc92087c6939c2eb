// What the CUDA sources share: the Context's CUDA handles, CUDA errors as Status, launch-size
// helpers and warp reductions. Only src/backend/cuda includes CUDA headers.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "backend/cuda.h"

namespace moenav::cuda {

struct Context::Impl {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  int64_t budget = 0;
  int64_t allocated = 0;
  int64_t peak = 0;
  GemmPrecision gemm_precision = GemmPrecision::F32;
  // Scratch reused by ops that need temporary device memory (dequantized weight slices, bf16
  // activations, attention partials); grows on demand and counts against the budget.
  DeviceBuffer scratch;
  std::vector<void*> pinned;  // host ranges registered by pin_host, unregistered at destruction
};

inline Status cuda_status(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return ok_status();
  return Status::errorf("CUDA {}: {} ({})", what, cudaGetErrorString(error),
                        cudaGetErrorName(error));
}

inline Status cublas_status(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return ok_status();
  return Status::errorf("cuBLAS {}: {}", what, cublasGetStatusString(status));
}

// The Status of the kernel launched last on this thread (bad launch configuration, no device).
inline Status launch_status(const char* kernel) { return cuda_status(cudaGetLastError(), kernel); }

// A scratch area of at least `bytes` (contents undefined); valid until the next call.
Expected<void*> scratch(Context& context, int64_t bytes);

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

constexpr unsigned kFullMask = 0xffffffffu;

__device__ inline float warp_sum(float value) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(kFullMask, value, offset);
  return value;
}

__device__ inline float warp_max(float value) {
  for (int offset = 16; offset > 0; offset >>= 1)
    value = fmaxf(value, __shfl_xor_sync(kFullMask, value, offset));
  return value;
}

}  // namespace moenav::cuda
