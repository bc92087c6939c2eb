// This process's GPU memory as the NVIDIA driver reports it (NVML): the allocator's buffers plus
// what moenav does not allocate itself (the CUDA context, cuBLAS' workspace, the kernels' code).
// libnvidia-ml is opened at run time, so no build needs it; without it the call says why.
#pragma once

#include <cstdint>

#include "moenav/status.h"

namespace moenav::cuda {

// Bytes NVML lists for this process on device `index` (NVML's numbering, which is CUDA's unless
// CUDA_VISIBLE_DEVICES reorders them), now.
Expected<int64_t> nvml_process_bytes(int index = 0);

}  // namespace moenav::cuda
