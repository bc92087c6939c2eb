// The emulated device memory: every allocation has pages of its own, inaccessible to the host
// except while an emulated kernel, copy or GEMM runs (DeviceAccess: an allocation is opened when
// it is first touched then, and closed after), so that host code which dereferences a device
// pointer faults, with a message, as it would on a GPU. Each allocation
// ends within 255 bytes of a page that stays inaccessible, so a kernel reading past its end
// faults too. New allocations are filled with 0xff bytes (NaN as floats) to make reads of
// memory never written visible in results.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>

#include "cuda_runtime.h"

namespace cuda_emulator {

// Held by every emulated operation: the emulated device runs one of them at a time.
std::recursive_mutex& device_mutex();

// The device's size (MOENAV_EMULATED_GPU_BYTES, default 16 GiB) and what is allocated of it.
size_t total_bytes();
size_t allocated_bytes();

cudaError_t allocate(void** data, size_t bytes);
cudaError_t release(void* data);

// Whether [data, data + bytes) lies in one allocation, or in registered host memory.
bool in_device_memory(const void* data, size_t bytes);
bool in_registered_host_memory(const void* data, size_t bytes);
cudaError_t register_host(void* data, size_t bytes);
cudaError_t unregister_host(void* data);

// Lets the calling thread touch device memory for its lifetime; nests.
class DeviceAccess {
 public:
  DeviceAccess();
  ~DeviceAccess();
  DeviceAccess(const DeviceAccess&) = delete;
  DeviceAccess& operator=(const DeviceAccess&) = delete;
};

// Records an error of an emulated call: printed to stderr and returned by cudaGetLastError.
void report(cudaError_t error, const char* format, ...) __attribute__((format(printf, 2, 3)));
// The same for a fault of a kernel or copy, which is also sticky (every later synchronization
// returns it), as on a GPU.
void fault(cudaError_t error, const char* format, ...) __attribute__((format(printf, 2, 3)));
cudaError_t sticky_error();
void set_last_error(cudaError_t error);
cudaError_t take_last_error();  // and reset it

}  // namespace cuda_emulator
