// The CUDA emulator (tests/cuda_emulator/README.md): the part of the CUDA runtime API, and of
// the kernel language, that moenav's backend uses, so that src/backend/cuda compiles as plain
// C++ and runs on the CPU. Kernels run block after block; each thread of a block is a fiber, so
// warp shuffles and __syncthreads are real rendezvous between the block's threads.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "vector_types.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// One block runs at a time, so a function-local static is the block's shared memory.
#define __shared__ static

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorIllegalAddress = 700,
  cudaErrorHostMemoryAlreadyRegistered = 712,
  cudaErrorHostMemoryNotRegistered = 713,
  cudaErrorLaunchFailure = 719,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorIllegalState = 401,
};

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

struct CUstream_st;
using cudaStream_t = CUstream_st*;
struct CUevent_st;
using cudaEvent_t = CUevent_st*;
struct CUgraph_st;
using cudaGraph_t = CUgraph_st*;
struct CUgraphExec_st;
using cudaGraphExec_t = CUgraphExec_st*;

enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2,
};

constexpr unsigned int cudaStreamNonBlocking = 0x01;
constexpr unsigned int cudaEventDisableTiming = 0x02;
constexpr unsigned int cudaHostRegisterPortable = 0x01;
constexpr unsigned int cudaHostRegisterReadOnly = 0x08;
constexpr unsigned int cudaHostAllocDefault = 0x00;

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  int major;
  int minor;
  int multiProcessorCount;
};

struct cudaLaunchConfig_t {
  dim3 gridDim;
  dim3 blockDim;
  size_t dynamicSmemBytes;
  cudaStream_t stream;
  void* attrs;
  unsigned int numAttrs;
};

const char* cudaGetErrorString(cudaError_t error);
const char* cudaGetErrorName(cudaError_t error);
cudaError_t cudaGetLastError();
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* properties, int device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaMalloc(void** data, size_t bytes);
cudaError_t cudaFree(void* data);
cudaError_t cudaHostRegister(void* data, size_t bytes, unsigned int flags);
cudaError_t cudaHostUnregister(void* data);
cudaError_t cudaHostAlloc(void** data, size_t bytes, unsigned int flags);
cudaError_t cudaFreeHost(void* data);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags);
cudaError_t cudaMemcpyAsync(void* to, const void* from, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream);
cudaError_t cudaMemsetAsync(void* data, int value, size_t bytes, cudaStream_t stream);
// Stream capture (every mode behaves as Global) and graphs: the captured jobs replay in order.
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);

namespace cuda_emulator {

// The value lane (this lane ^ lane_mask) passed to the same shuffle; every lane of the warp must
// take part (mask == 0xffffffff), as moenav's kernels do.
uint64_t shuffle_xor(unsigned int mask, uint64_t bits, int lane_mask, int width);
void block_barrier();

// Queues a run of body() by every thread of config's grid on config.stream. pointers: the
// kernel's pointer arguments, each of which must be device memory or registered host memory.
cudaError_t launch(const cudaLaunchConfig_t& config, std::function<void()> body,
                   std::initializer_list<const void*> pointers);

template <typename T>
const void* pointer_argument(const T& value) {
  if constexpr (std::is_pointer_v<T>) {
    return static_cast<const void*>(value);
  } else {
    return nullptr;
  }
}

}  // namespace cuda_emulator

// The built-in variables, set by the emulator before it resumes each emulated thread.
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

template <typename T>
T __shfl_xor_sync(unsigned int mask, T value, int lane_mask, int width = 32) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>);
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = cuda_emulator::shuffle_xor(mask, bits, lane_mask, width);
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

inline void __syncthreads() { cuda_emulator::block_barrier(); }

template <typename T>
T __ldg(const T* pointer) {
  return *pointer;
}

// The device-code overloads of min and max.
template <typename T>
constexpr T max(T a, T b) {
  return a < b ? b : a;
}
template <typename T>
constexpr T min(T a, T b) {
  return b < a ? b : a;
}

// As the CUDA runtime's typed launch: the arguments are converted to the kernel's parameter
// types and kept with the queued launch; each emulated thread calls the kernel with its own copy.
template <typename... Params, typename... Args>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* config, void (*kernel)(Params...),
                               Args&&... args) {
  return [config, kernel](Params... coerced) {
    return cuda_emulator::launch(*config, [kernel, coerced...] { kernel(coerced...); },
                                 {cuda_emulator::pointer_argument(coerced)...});
  }(std::forward<Args>(args)...);
}
