// The CUDA backend of a build without nvcc: available() says so, Context::create fails with the
// same message, and the rest is unreachable (it needs a Context).
#ifndef MOENAV_HAVE_CUDA

#include "backend/cuda.h"
#include "backend/cuda_ops.h"

namespace moenav::cuda {
namespace {
Status not_built() {
  return Status::error(
      "moenav was built without CUDA support (no nvcc found at configure time; install the CUDA "
      "toolkit and reconfigure with -DMOENAV_CUDA=ON)");
}
}  // namespace

struct Context::Impl {};

Status available(int) { return not_built(); }
Expected<DeviceInfo> device_info(int) { return not_built(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  std::swap(owner_, other.owner_);
  std::swap(data_, other.data_);
  std::swap(bytes_, other.bytes_);
  return *this;
}
DeviceBuffer::~DeviceBuffer() = default;
void DeviceBuffer::reset() {}

Expected<std::unique_ptr<Context>> Context::create(int, int64_t) { return not_built(); }
Context::Context(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Context::~Context() = default;
Expected<DeviceBuffer> Context::allocate(int64_t, std::string_view) { return not_built(); }
int64_t Context::budget_bytes() const { return 0; }
int64_t Context::allocated_bytes() const { return 0; }
int64_t Context::peak_bytes() const { return 0; }
Status Context::upload(const DeviceBuffer&, const void*, int64_t, int64_t) { return not_built(); }
Status Context::download(void*, const DeviceBuffer&, int64_t, int64_t) { return not_built(); }
Status Context::pin_host(const void*, int64_t) { return not_built(); }
Status Context::upload_pinned(const DeviceBuffer&, const void*, int64_t, int64_t, Stream) {
  return not_built();
}
PinnedBuffer::PinnedBuffer(PinnedBuffer&& other) noexcept { *this = std::move(other); }
PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  std::swap(data_, other.data_);
  std::swap(bytes_, other.bytes_);
  return *this;
}
PinnedBuffer::~PinnedBuffer() = default;
Expected<PinnedBuffer> Context::allocate_pinned(int64_t) { return not_built(); }
Status Context::download_pinned(void*, const DeviceBuffer&, int64_t, int64_t) { return not_built(); }
Event::Event(Event&& other) noexcept { std::swap(handle_, other.handle_); }
Event& Event::operator=(Event&& other) noexcept {
  std::swap(handle_, other.handle_);
  return *this;
}
Event::~Event() = default;
Expected<Event> Context::create_event() { return not_built(); }
Status Context::record(Event&, Stream) { return not_built(); }
Status Context::wait(Stream, const Event&) { return not_built(); }
Status Context::copy(void*, const void*, int64_t) { return not_built(); }
Status Context::zero(void*, int64_t) { return not_built(); }
Status Context::synchronize() { return not_built(); }
Graph::Graph(Graph&& other) noexcept { std::swap(exec_, other.exec_); }
Graph& Graph::operator=(Graph&& other) noexcept {
  std::swap(exec_, other.exec_);
  return *this;
}
Graph::~Graph() = default;
Status Context::begin_capture() { return not_built(); }
Expected<Graph> Context::end_capture() { return not_built(); }
bool Context::is_current(const Graph&) const { return false; }
Status Context::launch(const Graph&) { return not_built(); }
GemmPrecision Context::gemm_precision() const { return GemmPrecision::F32; }
void Context::set_gemm_precision(GemmPrecision) {}
void Context::release(void*, int64_t) {}

Status matmul(Context&, const DeviceWeight&, const float*, int64_t, float*) { return not_built(); }
Status matmul_parts(Context&, const MatmulPart*, size_t, const float*, int64_t) { return not_built(); }
Status selected_gate_up(Context&, const SelectedExperts&, const float*, const GluArgs&, float*) {
  return not_built();
}
Status selected_down(Context&, const SelectedExperts&, const float*, float*) { return not_built(); }
Status combine_slots(Context&, const float*, const float*, int64_t, int64_t, int64_t, float*, const int32_t*) {
  return not_built();
}
int64_t grouped_row_tiles(int64_t group_rows) { return (group_rows + kGroupedTileRows - 1) / kGroupedTileRows; }
Status grouped_gate_up(Context&, const GroupedExperts&, const uint16_t*, const GluArgs&, uint16_t*) {
  return not_built();
}
Status grouped_down(Context&, const GroupedExperts&, const uint16_t*, float*) { return not_built(); }
Status gather_rows_bf16(Context&, const float*, int64_t, const int32_t*, int64_t, uint16_t*) {
  return not_built();
}
Status rms_norm(Context&, const float*, const float*, float*, int64_t, int64_t, float) {
  return not_built();
}
Status add_rms_norm(Context&, float*, const float*, const float*, float*, int64_t, int64_t, float) {
  return not_built();
}
Status rope(Context&, const RopeArgs&) { return not_built(); }
Status silu_mul(Context&, const float*, const float*, float*, int64_t) { return not_built(); }
Status clamped_swiglu(Context&, const float*, const float*, float*, int64_t, float, float) {
  return not_built();
}
Status add(Context&, const float*, const float*, float*, int64_t) { return not_built(); }
Status add_bias(Context&, float*, const float*, int64_t, int64_t) { return not_built(); }
Status add_gated(Context&, float*, const float*, const float*, int64_t, int64_t) { return not_built(); }
Status copy_columns(Context&, const float*, int64_t, float*, int64_t, int64_t, int64_t) {
  return not_built();
}
Status store_kv(Context&, const float*, void*, int64_t, const int32_t*, int64_t, DType, const float*, void*) {
  return not_built();
}
Status router_top_k(Context&, const RouterArgs&) { return not_built(); }
Status attention(Context&, const AttentionArgs&) { return not_built(); }
Status gather_rows(Context&, const float*, int64_t, const int32_t*, int64_t, float*) {
  return not_built();
}
Status scatter_add_rows(Context&, const float*, int64_t, const int32_t*, const float*, int64_t,
                        float*) {
  return not_built();
}

}  // namespace moenav::cuda

#endif  // MOENAV_HAVE_CUDA
