#include "backend/nvml.h"

#include <dlfcn.h>
#include <unistd.h>

#include <vector>

namespace moenav::cuda {
namespace {

// The few NVML declarations used, as nvml.h (API 12) has them.
using NvmlDevice = void*;
struct NvmlProcessInfo {  // nvmlProcessInfo_v2_t, what the _v3 queries fill
  unsigned int pid;
  unsigned long long used_gpu_memory;
  unsigned int gpu_instance_id;
  unsigned int compute_instance_id;
};
constexpr int kNvmlSuccess = 0;
constexpr int kNvmlInsufficientSize = 7;

struct Nvml {
  int (*init)() = nullptr;
  int (*handle_by_index)(unsigned int, NvmlDevice*) = nullptr;
  int (*compute_processes)(NvmlDevice, unsigned int*, NvmlProcessInfo*) = nullptr;
  bool loaded = false;
};

const Nvml& nvml() {
  static const Nvml library = [] {
    Nvml out;
    void* handle = dlopen("libnvidia-ml.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (handle == nullptr) return out;
    out.init = reinterpret_cast<int (*)()>(dlsym(handle, "nvmlInit_v2"));
    out.handle_by_index =
        reinterpret_cast<int (*)(unsigned int, NvmlDevice*)>(dlsym(handle, "nvmlDeviceGetHandleByIndex_v2"));
    out.compute_processes = reinterpret_cast<int (*)(NvmlDevice, unsigned int*, NvmlProcessInfo*)>(
        dlsym(handle, "nvmlDeviceGetComputeRunningProcesses_v3"));
    out.loaded = out.init && out.handle_by_index && out.compute_processes && out.init() == kNvmlSuccess;
    return out;  // the library stays loaded for the process
  }();
  return library;
}

}  // namespace

Expected<int64_t> nvml_process_bytes(int index) {
  const Nvml& library = nvml();
  if (!library.loaded) {
    return Status::error("NVML is not available (libnvidia-ml.so.1 missing, too old, or its "
                         "initialisation failed)");
  }
  NvmlDevice device = nullptr;
  if (int error = library.handle_by_index(static_cast<unsigned int>(index), &device); error != kNvmlSuccess) {
    return Status::errorf("NVML has no device {} (error {})", index, error);
  }
  std::vector<NvmlProcessInfo> processes(16);
  for (;;) {
    auto count = static_cast<unsigned int>(processes.size());
    const int error = library.compute_processes(device, &count, processes.data());
    if (error == kNvmlInsufficientSize) {
      processes.resize(static_cast<size_t>(count) + 16);
      continue;
    }
    if (error != kNvmlSuccess) return Status::errorf("NVML process query failed (error {})", error);
    processes.resize(count);
    break;
  }
  const auto self = static_cast<unsigned int>(getpid());
  for (const NvmlProcessInfo& process : processes) {
    if (process.pid == self) return static_cast<int64_t>(process.used_gpu_memory);
  }
  return Status::errorf("NVML lists no memory of this process (pid {}) on device {} (inside a "
                        "container NVML may see other pids)", self, index);
}

}  // namespace moenav::cuda
