// Devices, the budgeted allocator and host/device copies of the CUDA backend.
#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "backend/cuda/cuda_internal.h"
#include "core/byte_size.h"

namespace moenav::cuda {

Status available(int index) {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    return Status::errorf("no usable CUDA device: {} ({})", cudaGetErrorString(error),
                          cudaGetErrorName(error));
  }
  if (index < 0 || index >= count) {
    return Status::errorf("no CUDA device {}: this machine has {}", index, count);
  }
  cudaDeviceProp properties{};
  MOENAV_RETURN_IF_ERROR(cuda_status(cudaGetDeviceProperties(&properties, index), "device query"));
  if (properties.major * 10 + properties.minor < MOENAV_CUDA_OLDEST_ARCH) {
    return Status::errorf(
        "CUDA device {} ({}) has compute capability {}.{}; this build's kernels need {}.{} or newer "
        "(reconfigure with -DMOENAV_CUDA_ARCHITECTURES={}{})", index, properties.name,
        properties.major, properties.minor, MOENAV_CUDA_OLDEST_ARCH / 10, MOENAV_CUDA_OLDEST_ARCH % 10,
        properties.major, properties.minor);
  }
  return ok_status();
}

Expected<DeviceInfo> device_info(int index) {
  MOENAV_RETURN_IF_ERROR(available(index));
  cudaDeviceProp properties{};
  MOENAV_RETURN_IF_ERROR(cuda_status(cudaGetDeviceProperties(&properties, index), "device query"));
  MOENAV_RETURN_IF_ERROR(cuda_status(cudaSetDevice(index), "set device"));
  size_t free_bytes = 0, total_bytes = 0;
  MOENAV_RETURN_IF_ERROR(cuda_status(cudaMemGetInfo(&free_bytes, &total_bytes), "memory query"));
  DeviceInfo info;
  info.index = index;
  info.name = properties.name;
  info.compute_major = properties.major;
  info.compute_minor = properties.minor;
  info.multiprocessors = properties.multiProcessorCount;
  info.total_bytes = static_cast<int64_t>(total_bytes);
  info.free_bytes = static_cast<int64_t>(free_bytes);
  return info;
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    owner_ = std::exchange(other.owner_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() { reset(); }

void DeviceBuffer::reset() {
  if (owner_ && data_) owner_->release(data_, bytes_);
  owner_ = nullptr;
  data_ = nullptr;
  bytes_ = 0;
}

Context::Context(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Expected<std::unique_ptr<Context>> Context::create(int device, int64_t memory_budget) {
  MOENAV_ASSIGN_OR_RETURN(const DeviceInfo info, device_info(device));
  if (memory_budget < 0) return Status::errorf("gpu memory budget {} is negative", memory_budget);
  auto impl = std::make_unique<Impl>();
  impl->device = device;
  impl->budget = memory_budget == 0 ? info.free_bytes : memory_budget;
  MOENAV_RETURN_IF_ERROR(
      cuda_status(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking), "stream"));
  MOENAV_RETURN_IF_ERROR(cuda_status(
      cudaStreamCreateWithFlags(&impl->copy_stream, cudaStreamNonBlocking), "copy stream"));
  std::unique_ptr<Context> context(new Context(std::move(impl)));
  Impl& state = context->impl();
  MOENAV_RETURN_IF_ERROR(cublas_status(cublasCreate(&state.blas), "create"));
  MOENAV_RETURN_IF_ERROR(cublas_status(cublasSetStream(state.blas, state.stream), "set stream"));
  return std::move(context);  // C++17 (CUDA sources) does not move into the Expected implicitly
}

Context::~Context() {
  // No copy may still read pinned memory.
  if (impl_->stream) cudaStreamSynchronize(impl_->stream);
  if (impl_->copy_stream) cudaStreamSynchronize(impl_->copy_stream);
  for (void* data : impl_->pinned) cudaHostUnregister(data);
  impl_->scratch = DeviceBuffer();
  if (impl_->blas) cublasDestroy(impl_->blas);
  if (impl_->copy_stream) cudaStreamDestroy(impl_->copy_stream);
  if (impl_->stream) cudaStreamDestroy(impl_->stream);
}

Expected<DeviceBuffer> Context::allocate(int64_t bytes, std::string_view purpose) {
  if (bytes <= 0) return DeviceBuffer();
  if (impl_->allocated + bytes > impl_->budget) {
    return Status::errorf(
        "GPU memory budget exhausted: {} needs {}, {} of the {} budget are in use", purpose,
        format_bytes(bytes), format_bytes(impl_->allocated), format_bytes(impl_->budget));
  }
  void* data = nullptr;
  MOENAV_RETURN_IF_ERROR(cuda_status(cudaSetDevice(impl_->device), "set device"));
  const cudaError_t error = cudaMalloc(&data, static_cast<size_t>(bytes));
  if (error != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later launches report their own
    return Status::errorf("CUDA allocation of {} for {} failed: {}", format_bytes(bytes), purpose,
                          cudaGetErrorString(error));
  }
  impl_->allocated += bytes;
  impl_->peak = std::max(impl_->peak, impl_->allocated);
  return DeviceBuffer(this, data, bytes);
}

void Context::release(void* data, int64_t bytes) {
  cudaFree(data);
  impl_->allocated -= bytes;
}

int64_t Context::budget_bytes() const { return impl_->budget; }
int64_t Context::allocated_bytes() const { return impl_->allocated; }
int64_t Context::peak_bytes() const { return impl_->peak; }
GemmPrecision Context::gemm_precision() const { return impl_->gemm_precision; }
void Context::set_gemm_precision(GemmPrecision precision) { impl_->gemm_precision = precision; }

namespace {
Status check_range(const DeviceBuffer& buffer, int64_t bytes, int64_t offset, const char* what) {
  if (bytes < 0 || offset < 0 || offset + bytes > buffer.bytes()) {
    return Status::errorf("CUDA {} of {} bytes at offset {} outside a {}-byte buffer", what, bytes,
                          offset, buffer.bytes());
  }
  return ok_status();
}
}  // namespace

Status Context::upload(const DeviceBuffer& to, const void* from, int64_t bytes, int64_t offset) {
  MOENAV_RETURN_IF_ERROR(check_range(to, bytes, offset, "upload"));
  MOENAV_RETURN_IF_ERROR(cuda_status(
      cudaMemcpyAsync(static_cast<char*>(to.data()) + offset, from, static_cast<size_t>(bytes),
                      cudaMemcpyHostToDevice, impl_->stream),
      "upload"));
  // Pageable host memory is staged before cudaMemcpyAsync returns only for small copies, so wait.
  return cuda_status(cudaStreamSynchronize(impl_->stream), "upload");
}

Status Context::pin_host(const void* data, int64_t bytes) {
  if (bytes <= 0) return ok_status();
  // Read-only registration: the memory may be a read-only file mapping.
  const cudaError_t error = cudaHostRegister(const_cast<void*>(data), static_cast<size_t>(bytes),
                                             cudaHostRegisterPortable | cudaHostRegisterReadOnly);
  if (error != cudaSuccess) {
    cudaGetLastError();  // not sticky, but keep later checks clean
    return Status::errorf("pinning {} of host memory failed: {}", format_bytes(bytes),
                          cudaGetErrorString(error));
  }
  impl_->pinned.push_back(const_cast<void*>(data));
  return ok_status();
}

Status Context::upload_pinned(const DeviceBuffer& to, const void* from, int64_t bytes,
                              int64_t offset, Stream stream) {
  MOENAV_RETURN_IF_ERROR(check_range(to, bytes, offset, "upload"));
  return cuda_status(
      cudaMemcpyAsync(static_cast<char*>(to.data()) + offset, from, static_cast<size_t>(bytes),
                      cudaMemcpyHostToDevice, impl_->of(stream)),
      "pinned upload");
}

PinnedBuffer::PinnedBuffer(PinnedBuffer&& other) noexcept { *this = std::move(other); }

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  if (this != &other) {
    if (data_) cudaFreeHost(data_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

PinnedBuffer::~PinnedBuffer() {
  if (data_) cudaFreeHost(data_);
}

Expected<PinnedBuffer> Context::allocate_pinned(int64_t bytes) {
  if (bytes <= 0) return PinnedBuffer();
  void* data = nullptr;
  const cudaError_t error = cudaHostAlloc(&data, static_cast<size_t>(bytes), cudaHostAllocDefault);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return Status::errorf("page-locked host allocation of {} failed: {}", format_bytes(bytes),
                          cudaGetErrorString(error));
  }
  return PinnedBuffer(data, bytes);
}

Graph::Graph(Graph&& other) noexcept { *this = std::move(other); }

Graph& Graph::operator=(Graph&& other) noexcept {
  if (this != &other) {
    if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
    exec_ = std::exchange(other.exec_, nullptr);
    scratch_generation_ = other.scratch_generation_;
  }
  return *this;
}

Graph::~Graph() {
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
}

Status Context::begin_capture() {
  return cuda_status(cudaStreamBeginCapture(impl_->stream, cudaStreamCaptureModeGlobal), "stream capture");
}

Expected<Graph> Context::end_capture() {
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(impl_->stream, &graph);
  if (ended != cudaSuccess) {
    cudaGetLastError();  // the capture's failure is this call's answer, not a later one's
    return cuda_status(ended, "stream capture");
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  MOENAV_RETURN_IF_ERROR(cuda_status(instantiated, "graph instantiation"));
  return Graph(exec, impl_->scratch_generation);
}

bool Context::is_current(const Graph& graph) const {
  return graph.exec_ != nullptr && graph.scratch_generation_ == impl_->scratch_generation;
}

Status Context::launch(const Graph& graph) {
  if (!is_current(graph)) return Status::error("CUDA graph launch: the graph is empty or its scratch area moved");
  return cuda_status(cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph.exec_), impl_->stream), "graph launch");
}

Event::Event(Event&& other) noexcept { *this = std::move(other); }

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    if (handle_) cudaEventDestroy(static_cast<cudaEvent_t>(handle_));
    handle_ = std::exchange(other.handle_, nullptr);
  }
  return *this;
}

Event::~Event() {
  if (handle_) cudaEventDestroy(static_cast<cudaEvent_t>(handle_));
}

Expected<Event> Context::create_event() {
  cudaEvent_t event = nullptr;
  MOENAV_RETURN_IF_ERROR(
      cuda_status(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "event creation"));
  return Event(event);
}

Status Context::record(Event& event, Stream stream) {
  return cuda_status(cudaEventRecord(static_cast<cudaEvent_t>(event.handle_), impl_->of(stream)),
                     "event record");
}

Status Context::wait(Stream waiter, const Event& event) {
  return cuda_status(
      cudaStreamWaitEvent(impl_->of(waiter), static_cast<cudaEvent_t>(event.handle_), 0),
      "event wait");
}

Status Context::download(void* to, const DeviceBuffer& from, int64_t bytes, int64_t offset) {
  MOENAV_RETURN_IF_ERROR(check_range(from, bytes, offset, "download"));
  MOENAV_RETURN_IF_ERROR(cuda_status(
      cudaMemcpyAsync(to, static_cast<const char*>(from.data()) + offset,
                      static_cast<size_t>(bytes), cudaMemcpyDeviceToHost, impl_->stream),
      "download"));
  return cuda_status(cudaStreamSynchronize(impl_->stream), "download");
}

Status Context::download_pinned(void* to, const DeviceBuffer& from, int64_t bytes, int64_t offset) {
  MOENAV_RETURN_IF_ERROR(check_range(from, bytes, offset, "download"));
  return cuda_status(cudaMemcpyAsync(to, static_cast<const char*>(from.data()) + offset,
                                     static_cast<size_t>(bytes), cudaMemcpyDeviceToHost, impl_->stream),
                     "pinned download");
}

Status Context::copy(void* to, const void* from, int64_t bytes) {
  if (bytes <= 0) return ok_status();
  return cuda_status(cudaMemcpyAsync(to, from, static_cast<size_t>(bytes),
                                     cudaMemcpyDeviceToDevice, impl_->stream),
                     "device copy");
}

Status Context::zero(void* data, int64_t bytes) {
  if (bytes <= 0) return ok_status();
  return cuda_status(cudaMemsetAsync(data, 0, static_cast<size_t>(bytes), impl_->stream), "memset");
}

Status Context::synchronize() {
  MOENAV_RETURN_IF_ERROR(cuda_status(cudaStreamSynchronize(impl_->copy_stream), "copy"));
  return cuda_status(cudaStreamSynchronize(impl_->stream), "kernel execution");
}

Expected<void*> scratch(Context& context, int64_t bytes) {
  Context::Impl& state = context.impl();
  if (state.scratch.bytes() < bytes) {
    // The stream may still use the old area: wait before it is freed.
    MOENAV_RETURN_IF_ERROR(context.synchronize());
    const int64_t grown = std::max(bytes, state.scratch.bytes() * 2);
    state.scratch = DeviceBuffer();
    MOENAV_ASSIGN_OR_RETURN(state.scratch, context.allocate(grown, "scratch"));
    ++state.scratch_generation;
  }
  return state.scratch.data();
}

}  // namespace moenav::cuda
