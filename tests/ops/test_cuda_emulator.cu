// The CPU emulator of the CUDA backend (tests/cuda_emulator), checked on what makes it worth
// running the gpu tests on: the kernel language behaves as on a GPU (thread and block indices,
// warp shuffles, __syncthreads and shared memory), and the mistakes a GPU would punish are
// caught with a message rather than passing silently: host code reading device memory, a kernel
// reading past an allocation, a host pointer passed to a kernel, a shuffle in a partial warp,
// divergent barriers, and reads of memory never written; streams that run late unless an
// event orders them; and stream capture, whose graphs replay what was recorded and which a wait
// or an allocation invalidates. Only the emulated build runs them
// (cmake --preset cuda-emulated); on a real CUDA build they skip.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <vector>

#include <cuda_runtime.h>

namespace {

#ifdef MOENAV_CUDA_EMULATED
constexpr bool kEmulated = true;
#else
constexpr bool kEmulated = false;
#endif

// out[global thread] = the sum over its warp of (global thread index), by xor shuffles.
__global__ void warp_sums(float* out) {
  const unsigned thread = threadIdx.x + threadIdx.y * blockDim.x;
  const unsigned global = blockIdx.x * blockDim.x * blockDim.y + thread;
  float value = static_cast<float>(global);
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  out[global] = value;
}

// out[block] = the sum of the block's thread indices, through shared memory and a barrier.
__global__ void block_sums(float* out) {
  __shared__ float partial[256];
  partial[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  if (threadIdx.x == 0) {
    float sum = 0.0f;
    for (unsigned i = 0; i < blockDim.x; ++i) sum += partial[i];
    out[blockIdx.x] = sum;
  }
}

__global__ void copy_floats(const float* in, float* out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = in[i];
}

__global__ void read_at(const float* in, int index, float* out) { *out = in[index]; }

// Half a warp at __syncthreads, the other half at a shuffle: neither can complete.
__global__ void divergent_barrier(float* out) {
  float value = 1.0f;
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    value = __shfl_xor_sync(0xffffffffu, value, 1);
  }
  out[threadIdx.x] = value;
}

template <typename... Params, typename... Args>
cudaError_t launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  return cudaLaunchKernelEx(&config, kernel, args...);
}

std::vector<float> download(const float* device, size_t n) {
  std::vector<float> host(n);
  EXPECT_EQ(cudaMemcpyAsync(host.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost, nullptr),
            cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
  return host;
}

float* device_floats(size_t n) {
  void* data = nullptr;
  EXPECT_EQ(cudaMalloc(&data, n * sizeof(float)), cudaSuccess);
  return static_cast<float*>(data);
}

class CudaEmulator : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kEmulated) GTEST_SKIP() << "the CUDA emulator's own checks (this build runs a real GPU)";
    GTEST_FLAG_SET(death_test_style, "threadsafe");
  }
};

TEST_F(CudaEmulator, ShufflesReduceOverEachWarpOfATwoDimensionalBlock) {
  const dim3 block(16, 8);  // 128 threads: warps span rows of the block, as on a GPU
  float* out = device_floats(3 * 128);
  ASSERT_EQ(launch(warp_sums, dim3(3), block, out), cudaSuccess);
  const std::vector<float> sums = download(out, 3 * 128);
  for (size_t i = 0; i < sums.size(); ++i) {
    const size_t first = i - i % 32;
    EXPECT_EQ(sums[i], static_cast<float>(32 * first + 31 * 32 / 2)) << "thread " << i;
  }
  cudaFree(out);
}

TEST_F(CudaEmulator, SharedMemoryAndBarriersAreTheBlocks) {
  float* out = device_floats(4);
  ASSERT_EQ(launch(block_sums, dim3(4), dim3(256), out), cudaSuccess);
  for (float sum : download(out, 4)) EXPECT_EQ(sum, 255.0f * 256.0f / 2.0f);
  cudaFree(out);
}

TEST_F(CudaEmulator, FreshAllocationsReadAsNan) {
  float* in = device_floats(100);
  float* out = device_floats(100);
  ASSERT_EQ(launch(copy_floats, dim3(1), dim3(128), static_cast<const float*>(in), out, 100),
            cudaSuccess);
  for (float value : download(out, 100)) EXPECT_TRUE(std::isnan(value));
  cudaFree(in);
  cudaFree(out);
}

TEST_F(CudaEmulator, HostCodeReadingDeviceMemoryDies) {
  EXPECT_DEATH(
      {
        volatile float* data = device_floats(16);
        (void)data[3];
      },
      "host code accessed device memory .*12 bytes from the start of a 64-byte device allocation");
}

TEST_F(CudaEmulator, KernelReadingPastAnAllocationDies) {
  EXPECT_DEATH(
      {
        float* in = device_floats(256);  // 1 KiB: it ends where its guard page starts
        float* out = device_floats(1);
        (void)launch(read_at, dim3(1), dim3(1), static_cast<const float*>(in), 256, out);
      },
      "an emulated kernel or copy went past the end of an allocation .*1024 bytes from the start "
      "of a 1024-byte device allocation");
}

TEST_F(CudaEmulator, HostPointerKernelArgumentIsAnIllegalAddress) {
  EXPECT_EXIT(
      {
        std::vector<float> host(4);
        const cudaError_t error = launch(read_at, dim3(1), dim3(1),
                                         static_cast<const float*>(host.data()), 0, host.data() + 1);
        std::exit(error == cudaErrorIllegalAddress &&
                          cudaStreamSynchronize(nullptr) == cudaErrorIllegalAddress ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "kernel argument 1 .* is neither device memory nor registered host memory");
}

TEST_F(CudaEmulator, ShuffleInAPartialWarpFailsTheLaunch) {
  EXPECT_EXIT(
      {
        float* out = device_floats(48);
        const cudaError_t error = launch(warp_sums, dim3(1), dim3(48), out);
        std::exit(error == cudaErrorLaunchFailure &&
                          cudaStreamSynchronize(nullptr) == cudaErrorLaunchFailure ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "warp 1: a shuffle with 16 of 32 lanes taking part");
}

TEST_F(CudaEmulator, DivergentBarrierIsReportedNotHung) {
  EXPECT_EXIT(
      {
        float* out = device_floats(32);
        std::exit(launch(divergent_barrier, dim3(1), dim3(32), out) == cudaErrorLaunchFailure ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "deadlock, 16 of 32 live threads wait at __syncthreads");
}

TEST_F(CudaEmulator, CopiesAreCheckedAgainstTheirDirection) {
  EXPECT_EXIT(
      {
        float* device = device_floats(8);
        std::vector<float> host(8);
        // Source and destination swapped: the destination of a download must be host memory.
        const cudaError_t error = cudaMemcpyAsync(device, host.data(), 8 * sizeof(float),
                                                  cudaMemcpyDeviceToHost, nullptr);
        std::exit(error == cudaErrorInvalidValue ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "device to host of 32 bytes .*: the destination is not host memory");
}

// MOENAV_EMULATED_STREAMS=lazy: a job runs only once something needs it, so a kernel on one
// stream sees another stream's copy only when it waits for an event recorded after the copy.
// 0 when an unordered kernel misses a copy of another stream and an ordered one sees it.
int lazy_streams_check() {
  setenv("MOENAV_EMULATED_STREAMS", "lazy", 1);  // before the process's first stream job
  cudaStream_t copies = nullptr;
  cudaStream_t kernels = nullptr;
  cudaEvent_t copied = nullptr;
  cudaStreamCreateWithFlags(&copies, cudaStreamNonBlocking);
  cudaStreamCreateWithFlags(&kernels, cudaStreamNonBlocking);
  cudaEventCreateWithFlags(&copied, cudaEventDisableTiming);
  float* data = device_floats(1);
  float* out = device_floats(1);
  const float one = 1.0f;
  cudaMemcpyAsync(data, &one, sizeof(float), cudaMemcpyHostToDevice, copies);
  cudaEventRecord(copied, copies);
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(1);
  config.blockDim = dim3(1);
  config.stream = kernels;
  cudaLaunchKernelEx(&config, read_at, static_cast<const float*>(data), 0, out);
  float unordered = 0.0f, ordered = 0.0f;
  cudaMemcpyAsync(&unordered, out, sizeof(float), cudaMemcpyDeviceToHost, kernels);
  cudaStreamWaitEvent(kernels, copied, 0);
  cudaLaunchKernelEx(&config, read_at, static_cast<const float*>(data), 0, out);
  cudaMemcpyAsync(&ordered, out, sizeof(float), cudaMemcpyDeviceToHost, kernels);
  return std::isnan(unordered) && ordered == 1.0f ? 0 : 1;
}

TEST_F(CudaEmulator, LazyStreamsOrderOnlyByEvents) {
  EXPECT_EXIT(std::exit(lazy_streams_check()), ::testing::ExitedWithCode(0), "");
}

__global__ void add_to(float* x, float amount) { *x += amount; }

// A capturing stream runs nothing: its graph replays the copies and kernels with the arguments
// they were queued with, a copy from pinned memory reading it when the replay runs.
TEST_F(CudaEmulator, GraphsReplayWhatTheCaptureRecorded) {
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  float* x = device_floats(1);
  void* staging = nullptr;
  ASSERT_EQ(cudaHostAlloc(&staging, sizeof(float), cudaHostAllocDefault), cudaSuccess);
  auto* source = static_cast<float*>(staging);
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(x, source, sizeof(float), cudaMemcpyHostToDevice, stream), cudaSuccess);
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(1);
  config.blockDim = dim3(1);
  config.stream = stream;
  ASSERT_EQ(cudaLaunchKernelEx(&config, add_to, x, 2.0f), cudaSuccess);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  EXPECT_TRUE(std::isnan(download(x, 1)[0]));  // nothing ran: x was never written
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (float value : {10.0f, 20.0f}) {
    *source = value;
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_EQ(download(x, 1)[0], value + 2.0f);
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaFreeHost(staging);
  cudaFree(x);
  cudaStreamDestroy(stream);
}

// What waits for the device or allocates is refused during a capture, which it invalidates.
TEST_F(CudaEmulator, WaitingOrAllocatingDuringACaptureInvalidatesIt) {
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  float* x = device_floats(1);
  float host = 0.0f;
  auto refused = [&](auto call) {
    EXPECT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
    EXPECT_EQ(call(), cudaErrorStreamCaptureUnsupported);
    cudaGraph_t graph = nullptr;
    EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaErrorStreamCaptureInvalidated);
    EXPECT_EQ(graph, nullptr);
    cudaGetLastError();
  };
  refused([&] {
    void* data = nullptr;
    return cudaMalloc(&data, 16);
  });
  refused([&] { return cudaStreamSynchronize(stream); });
  refused([&] { return cudaMemcpyAsync(&host, x, sizeof(float), cudaMemcpyDeviceToHost, stream); });
  cudaFree(x);
  cudaStreamDestroy(stream);
}

TEST_F(CudaEmulator, BadLaunchConfigurationIsRefused) {
  float* out = device_floats(1);
  EXPECT_EQ(launch(read_at, dim3(0), dim3(1), static_cast<const float*>(out), 0, out),
            cudaErrorInvalidConfiguration);
  EXPECT_EQ(launch(read_at, dim3(1), dim3(2048), static_cast<const float*>(out), 0, out),
            cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // not sticky
  cudaFree(out);
}

}  // namespace
