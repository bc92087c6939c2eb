// The CUDA backend's host-side interface: devices, the device-memory allocator that enforces
// --gpu-memory, and device buffers. No CUDA header is included, so every module may use it. A
// build without nvcc links src/backend/cuda_stub.cpp instead: available() says why and
// Context::create fails, so nothing else can be reached.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "moenav/status.h"

namespace moenav::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  int multiprocessors = 0;
  int64_t total_bytes = 0;
  int64_t free_bytes = 0;
};

// OK when device `index` can run moenav's kernels: the build has CUDA, a driver is loaded and
// the device is at least the oldest architecture built for (MOENAV_CUDA_ARCHITECTURES, default
// 90). Otherwise one line saying which is missing.
Status available(int index = 0);
Expected<DeviceInfo> device_info(int index = 0);

class Context;

// Device memory from a Context's allocator, returned to it on destruction. Move-only; must not
// outlive its Context.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  void* data() const { return data_; }
  int64_t bytes() const { return bytes_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  friend class Context;
  DeviceBuffer(Context* owner, void* data, int64_t bytes)
      : owner_(owner), data_(data), bytes_(bytes) {}
  void reset();
  Context* owner_ = nullptr;
  void* data_ = nullptr;
  int64_t bytes_ = 0;
};

// Page-locked host memory (cudaHostAlloc), freed on destruction: where small uploads are staged
// so that upload_pinned can queue them without blocking the host. Move-only.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(PinnedBuffer&& other) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer();

  void* data() const { return data_; }
  int64_t bytes() const { return bytes_; }

 private:
  friend class Context;
  PinnedBuffer(void* data, int64_t bytes) : data_(data), bytes_(bytes) {}
  void* data_ = nullptr;
  int64_t bytes_ = 0;
};

// An ordering point between a Context's streams (a CUDA event): record() marks what was queued
// on one stream so far, wait() makes another stream's later work wait for it. Move-only; must
// not outlive its Context. Waiting for an event never recorded waits for nothing.
class Event {
 public:
  Event() = default;
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event();

 private:
  friend class Context;
  explicit Event(void* handle) : handle_(handle) {}
  void* handle_ = nullptr;  // cudaEvent_t
};

// A recorded run of the compute stream's work (a CUDA graph), replayed by Context::launch with
// the arguments it was recorded with: one launch instead of a kernel launch per op. Made by
// Context::begin_capture ... end_capture. Move-only; must not outlive its Context.
class Graph {
 public:
  Graph() = default;
  Graph(Graph&& other) noexcept;
  Graph& operator=(Graph&& other) noexcept;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  ~Graph();
  explicit operator bool() const { return exec_ != nullptr; }

 private:
  friend class Context;
  Graph(void* exec, int64_t scratch_generation) : exec_(exec), scratch_generation_(scratch_generation) {}
  void* exec_ = nullptr;  // cudaGraphExec_t
  int64_t scratch_generation_ = 0;  // the scratch area the recorded ops use
};

// The streams of a Context: kernels run on Compute; Copy carries expert uploads, so that they
// overlap the kernels (ordered against them by events).
enum class Stream { Compute, Copy };

// How matmul multiplies many tokens (prefill): F32 (the default) keeps weights and activations in
// f32, exact to float rounding like the CPU backend; Bf16 rounds both to bf16 for tensor-core
// GEMMs with f32 accumulation (faster, ~1e-5 relative error). Few tokens always use the f32
// matvec.
enum class GemmPrecision { Bf16, F32 };

// One device: its compute stream, cuBLAS handle, scratch space and the allocator. Every device
// allocation of moenav goes through allocate(), which refuses (with a Status, never a crash) to
// take the total past the budget; peak_bytes() is the high-water mark reported as gpu_mem.
class Context {
 public:
  // memory_budget: bytes moenav may hold on the device; 0 = the device's free memory.
  static Expected<std::unique_ptr<Context>> create(int device, int64_t memory_budget);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // `purpose` names the allocation in the error when the budget is exhausted.
  Expected<DeviceBuffer> allocate(int64_t bytes, std::string_view purpose);
  int64_t budget_bytes() const;
  int64_t allocated_bytes() const;
  int64_t peak_bytes() const;

  // Copies between host and device memory, ordered on the compute stream; they return once the
  // host memory may be reused.
  Status upload(const DeviceBuffer& to, const void* from, int64_t bytes, int64_t offset = 0);
  Status download(void* to, const DeviceBuffer& from, int64_t bytes, int64_t offset = 0);
  // Page-locks host memory that stays unchanged while the context lives (the model's expert
  // weights), so that upload_pinned can copy from it at full PCIe speed without waiting. Fails
  // (and nothing is pinned) where the driver refuses, e.g. for some file mappings.
  Status pin_host(const void* data, int64_t bytes);
  // An upload from memory pinned by pin_host or allocate_pinned, queued on `stream` without
  // blocking the host (so `from` must stay unchanged until the stream has run it): on
  // Compute it is ordered after the kernels queued before it and before those queued after; on
  // Copy only by events.
  Status upload_pinned(const DeviceBuffer& to, const void* from, int64_t bytes, int64_t offset = 0,
                       Stream stream = Stream::Compute);
  // A download into memory from allocate_pinned or pin_host, queued on the compute stream without
  // blocking the host: `to` holds the data once the stream has run it (a later synchronize or
  // download).
  Status download_pinned(void* to, const DeviceBuffer& from, int64_t bytes, int64_t offset = 0);
  Expected<PinnedBuffer> allocate_pinned(int64_t bytes);
  Expected<Event> create_event();
  Status record(Event& event, Stream stream);
  Status wait(Stream waiter, const Event& event);
  // Device-to-device copy and zero fill of raw device pointers, queued on the compute stream.
  Status copy(void* to, const void* from, int64_t bytes);
  Status zero(void* data, int64_t bytes);
  // Waits for both streams; an error of any kernel or copy queued before surfaces here.
  Status synchronize();
  // Records instead of running what is queued on the compute stream until end_capture. Nothing
  // that waits for the device or allocates (synchronize, download, allocate) may come between;
  // such a call fails and so does end_capture.
  Status begin_capture();
  // Ends the capture (call it also after an error since begin_capture) and instantiates it.
  Expected<Graph> end_capture();
  // Whether `graph` still uses the current scratch area (an op's scratch grown since the
  // capture moved it); launch refuses a graph that does not.
  bool is_current(const Graph& graph) const;
  Status launch(const Graph& graph);

  GemmPrecision gemm_precision() const;
  void set_gemm_precision(GemmPrecision precision);

  struct Impl;  // CUDA handles, defined in src/backend/cuda/context.cu
  Impl& impl() { return *impl_; }

 private:
  friend class DeviceBuffer;
  explicit Context(std::unique_ptr<Impl> impl);
  void release(void* data, int64_t bytes);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moenav::cuda
