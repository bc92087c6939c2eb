// The emulated CUDA runtime calls: one device, memory, and copies checked against the memory
// they claim to touch and queued on their stream (streams.h).
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "cuda_runtime.h"
#include "memory.h"
#include "streams.h"

using namespace cuda_emulator;

namespace {

struct Names {
  cudaError_t error;
  const char* name;
  const char* text;
};
constexpr Names kNames[] = {
    {cudaSuccess, "cudaSuccess", "no error"},
    {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
    {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
    {cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration", "invalid configuration argument"},
    {cudaErrorNoDevice, "cudaErrorNoDevice", "no CUDA-capable device is detected"},
    {cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal"},
    {cudaErrorIllegalAddress, "cudaErrorIllegalAddress", "an illegal memory access was encountered"},
    {cudaErrorHostMemoryAlreadyRegistered, "cudaErrorHostMemoryAlreadyRegistered",
     "part or all of the requested memory range is already mapped"},
    {cudaErrorHostMemoryNotRegistered, "cudaErrorHostMemoryNotRegistered",
     "pointer does not correspond to a registered memory region"},
    {cudaErrorLaunchFailure, "cudaErrorLaunchFailure", "unspecified launch failure"},
    {cudaErrorStreamCaptureUnsupported, "cudaErrorStreamCaptureUnsupported",
     "operation not permitted when stream is capturing"},
    {cudaErrorStreamCaptureInvalidated, "cudaErrorStreamCaptureInvalidated",
     "operation failed due to a previous error during capture"},
    {cudaErrorIllegalState, "cudaErrorIllegalState", "the operation cannot be performed in the present state"},
};

const Names& names(cudaError_t error) {
  for (const Names& n : kNames) {
    if (n.error == error) return n;
  }
  static const Names unknown{error, "cudaErrorUnknown", "unknown error"};
  return unknown;
}

cudaError_t result(cudaError_t error) {
  if (error != cudaSuccess) set_last_error(error);
  return error;
}

const char* kind_name(cudaMemcpyKind kind) {
  switch (kind) {
    case cudaMemcpyHostToDevice: return "host to device";
    case cudaMemcpyDeviceToHost: return "device to host";
    case cudaMemcpyDeviceToDevice: return "device to device";
    default: return "host to host";
  }
}

}  // namespace

const char* cudaGetErrorString(cudaError_t error) { return names(error).text; }
const char* cudaGetErrorName(cudaError_t error) { return names(error).name; }
cudaError_t cudaGetLastError() { return take_last_error(); }

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* properties, int device) {
  if (device != 0) return result(cudaErrorInvalidDevice);
  *properties = cudaDeviceProp{};
  std::snprintf(properties->name, sizeof(properties->name), "moenav CUDA emulator (CPU)");
  properties->totalGlobalMem = total_bytes();
  properties->major = 9;  // what the kernels are built for
  properties->minor = 0;
  properties->multiProcessorCount = 1;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : result(cudaErrorInvalidDevice); }

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  *total = total_bytes();
  *free_bytes = total_bytes() - allocated_bytes();
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** data, size_t bytes) {
  if (capture_forbids(nullptr, "cudaMalloc")) return cudaErrorStreamCaptureUnsupported;
  return result(allocate(data, bytes));
}
cudaError_t cudaFree(void* data) {
  if (capture_forbids(nullptr, "cudaFree")) return cudaErrorStreamCaptureUnsupported;
  drain_all();  // as CUDA's, which waits for the device
  return result(release(data));
}

cudaError_t cudaHostRegister(void* data, size_t bytes, unsigned int) {
  return result(register_host(data, bytes));
}
cudaError_t cudaHostUnregister(void* data) { return result(unregister_host(data)); }

cudaError_t cudaHostAlloc(void** data, size_t bytes, unsigned int) {
  *data = std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
  if (!*data) return result(cudaErrorMemoryAllocation);
  return result(register_host(*data, bytes));
}

cudaError_t cudaFreeHost(void* data) {
  if (!data) return cudaSuccess;
  if (capture_forbids(nullptr, "cudaFreeHost")) return cudaErrorStreamCaptureUnsupported;
  drain_all();  // as CUDA's, which waits for the device
  const cudaError_t error = unregister_host(data);
  if (error == cudaSuccess) std::free(data);
  return result(error);
}

cudaError_t cudaMemcpyAsync(void* to, const void* from, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  const bool to_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool from_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  const bool to_ok = to_device ? in_device_memory(to, bytes) : !in_device_memory(to, 1);
  const bool from_ok = from_device ? in_device_memory(from, bytes) : !in_device_memory(from, 1);
  if (!to_ok || !from_ok) {
    report(cudaErrorInvalidValue, "cudaMemcpyAsync %s of %zu bytes from %p to %p: the %s is not %s",
           kind_name(kind), bytes, from, to, to_ok ? "source" : "destination",
           (to_ok ? from_device : to_device) ? "inside one device allocation" : "host memory");
    return cudaErrorInvalidValue;
  }
  const bool pageable = (kind == cudaMemcpyHostToDevice && !in_registered_host_memory(from, bytes)) ||
                        (kind == cudaMemcpyDeviceToHost && !in_registered_host_memory(to, bytes));
  if (pageable && capture_forbids(stream, "a copy from or to pageable host memory")) {
    return cudaErrorStreamCaptureUnsupported;
  }
  if (kind == cudaMemcpyHostToDevice && !in_registered_host_memory(from, bytes)) {
    // Pageable memory is staged before the call returns: the caller may reuse it at once.
    auto staged = std::make_shared<std::vector<char>>(static_cast<const char*>(from),
                                                      static_cast<const char*>(from) + bytes);
    enqueue(stream, [to, staged] {
      DeviceAccess access;
      std::memcpy(to, staged->data(), staged->size());
    });
    return cudaSuccess;
  }
  enqueue(stream, [to, from, bytes] {
    DeviceAccess access;
    std::memmove(to, from, bytes);
  });
  // A copy into pageable memory has finished when the call returns.
  if (kind == cudaMemcpyDeviceToHost && !in_registered_host_memory(to, bytes)) drain(stream);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* data, int value, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  if (!in_device_memory(data, bytes)) {
    report(cudaErrorInvalidValue, "cudaMemsetAsync of %zu bytes at %p: not inside one device allocation",
           bytes, data);
    return cudaErrorInvalidValue;
  }
  enqueue(stream, [data, value, bytes] {
    DeviceAccess access;
    std::memset(data, value, bytes);
  });
  return cudaSuccess;
}
