// nvml_process_bytes: NVML is opened at run time; on a machine without the NVIDIA driver (or for
// a process without a CUDA context, as this one) the query fails with a message, never a crash.
// test_cuda_engine checks the answer for a process that runs on the GPU.
#include <gtest/gtest.h>

#include "backend/nvml.h"

namespace moenav {
namespace {

TEST(Nvml, SaysWhyWhenItCannotAnswer) {
  auto bytes = cuda::nvml_process_bytes();
  if (bytes.ok()) {
    EXPECT_GT(*bytes, 0);  // it listed this process: it has a CUDA context
  } else {
    EXPECT_NE(bytes.error().find("NVML"), std::string::npos) << bytes.error();
  }
  EXPECT_FALSE(cuda::nvml_process_bytes(1 << 20).ok());  // no such device, or no NVML at all
}

}  // namespace
}  // namespace moenav
