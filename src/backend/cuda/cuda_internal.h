// What the CUDA sources share: the Context's CUDA handles, CUDA errors as Status, launch-size
// helpers and warp reductions. Only src/backend/cuda includes CUDA headers.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "backend/cuda.h"
#include "backend/cuda_ops.h"

namespace moenav::cuda {

struct Context::Impl {
  int device = 0;
  cudaStream_t stream = nullptr;       // compute
  cudaStream_t copy_stream = nullptr;  // expert uploads
  cudaStream_t of(Stream which) const { return which == Stream::Copy ? copy_stream : stream; }
  cublasHandle_t blas = nullptr;
  int64_t budget = 0;
  int64_t allocated = 0;
  int64_t peak = 0;
  GemmPrecision gemm_precision = GemmPrecision::F32;
  // Scratch reused by ops that need temporary device memory (dequantized weight slices, bf16
  // activations, attention partials); grows on demand and counts against the budget.
  DeviceBuffer scratch;
  int64_t scratch_generation = 0;  // counts the scratch area's moves (graphs record its address)
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

// Queues kernel(args...) on `grid` blocks of `block` threads on `stream`, as
// kernel<<<grid, block, 0, stream>>>(args...) would, through the runtime's typed
// cudaLaunchKernelEx (which the CPU emulator of tests/cuda_emulator provides too). The Status
// says why a launch was refused; a fault while the kernel runs surfaces at the next synchronize.
template <typename... Params, typename... Args>
Status launch(const char* what, void (*kernel)(Params...), dim3 grid, dim3 block,
              cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.stream = stream;
  return cuda_status(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), what);
}

// A scratch area of at least `bytes` (contents undefined); valid until the next call.
Expected<void*> scratch(Context& context, int64_t bytes);

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

constexpr unsigned kFullMask = 0xffffffffu;

__device__ inline float warp_sum(float value) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(kFullMask, value, offset);
  return value;
}

// Eight floats as eight bf16 (round to nearest even) in one 16-byte word, element 0 lowest.
__device__ inline uint4 pack_bf16x8(const float* w) {
  uint32_t words[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __nv_bfloat162 pair = __floats2bfloat162_rn(w[2 * i], w[2 * i + 1]);
    std::memcpy(&words[i], &pair, sizeof(uint32_t));
  }
  return uint4{words[0], words[1], words[2], words[3]};
}

__device__ inline float warp_max(float value) {
  for (int offset = 16; offset > 0; offset >>= 1)
    value = fmaxf(value, __shfl_xor_sync(kFullMask, value, offset));
  return value;
}

// The one or two projections an expert kernel multiplies (gate and up, or down): per expert, the
// matrix data and the optional f32 bias of each (null bias tables: none).
struct ProjectionTables {
  const void* const* first = nullptr;
  const void* const* second = nullptr;
  const float* const* first_bias = nullptr;
  const float* const* second_bias = nullptr;
};
inline ProjectionTables gate_up_tables(const ExpertTables& t) { return {t.gate_data, t.up_data, t.gate_bias, t.up_bias}; }
inline ProjectionTables down_tables(const ExpertTables& t) { return {t.down_data, nullptr, t.down_bias, nullptr}; }
__device__ inline float bias_of(const float* const* table, int32_t expert, int64_t row) {
  return table == nullptr ? 0.0f : table[expert][row];
}

// The experts' activation of gate and up, as layers/ffn.cpp's: SwiGLU silu(gate) * up, or
// gpt-oss's clamped one (clamped_swiglu).
__device__ inline float glu_activate(float gate, float up, const GluArgs& glu) {
  if (!glu.clamped) return gate / (1.0f + expf(-gate)) * up;
  const float g = fminf(gate, glu.limit);
  const float u = fminf(fmaxf(up, -glu.limit), glu.limit);
  return (u + 1.0f) * (g / (1.0f + expf(-g * glu.alpha)));
}

}  // namespace moenav::cuda
