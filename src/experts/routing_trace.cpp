#include "experts/routing_trace.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "experts/gate_speculation.h"
#include "model/model.h"

namespace moenav {
namespace {

constexpr char kMagic[8] = {'M', 'N', 'V', 'T', 'R', 'A', 'C', 'E'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kLayerMarker = 0x5259414c;  // "LAYR"
constexpr int64_t kMaxTokens = int64_t{1} << 24;
constexpr int64_t kMaxK = 1024;
constexpr int kMaxDepth = 16;

int64_t first_moe_layer(const ModelConfig& config) {
  for (int64_t l = 0; l < config.n_layers; ++l) if (config.is_moe_layer(l)) return l;
  return -1;
}

// Sequential reads over a byte buffer with the offset in every error.
class ByteReader {
 public:
  ByteReader(const std::string& path, std::vector<uint8_t> bytes)
      : path_(path), bytes_(std::move(bytes)) {}
  bool done() const { return offset_ == bytes_.size(); }
  template <typename T>
  Status read(T* out, size_t count, const char* what) {
    const size_t size = sizeof(T) * count;
    if (bytes_.size() - offset_ < size) {
      return Status::errorf("{}: truncated at byte {} while reading {} ({} bytes needed, {} left)",
                            path_, offset_, what, size, bytes_.size() - offset_);
    }
    std::memcpy(out, bytes_.data() + offset_, size);
    offset_ += size;
    return ok_status();
  }
  size_t offset() const { return offset_; }
  size_t remaining() const { return bytes_.size() - offset_; }

 private:
  std::string path_;
  std::vector<uint8_t> bytes_;
  size_t offset_ = 0;
};

Status check_experts(const std::string& path, size_t offset, const std::vector<int32_t>& experts,
                     int64_t n_experts, const char* what) {
  for (int32_t expert : experts) {
    if (expert < -1 || expert >= n_experts) {
      return Status::errorf("{}: record at byte {}: {} expert id {} outside [-1, {})", path, offset,
                            what, expert, n_experts);
    }
  }
  return ok_status();
}

Status read_layer(ByteReader& in, const std::string& path, const RoutingTrace& trace,
                  TraceLayer& event) {
  const size_t start = in.offset();
  uint32_t head[4];
  MOENAV_RETURN_IF_ERROR(in.read(head, 4, "a layer record header"));
  if (head[0] != kLayerMarker) {
    return Status::errorf("{}: byte {}: expected a layer record marker, found 0x{:08x}", path, start,
                          head[0]);
  }
  event.layer = head[1];
  event.n_tokens = head[2];
  event.k = head[3];
  if (event.layer >= trace.n_layers || event.n_tokens < 1 || event.n_tokens > kMaxTokens ||
      event.k < 1 || event.k > kMaxK) {
    return Status::errorf("{}: record at byte {}: layer {}, {} tokens, k {} out of range (trace has "
                          "{} layers)", path, start, event.layer, event.n_tokens, event.k,
                          trace.n_layers);
  }
  const auto n = static_cast<size_t>(event.n_tokens * event.k);
  if (n * (sizeof(int32_t) + sizeof(float)) > in.remaining()) {
    return Status::errorf("{}: truncated record at byte {}: {} tokens x k {} need {} bytes, {} left",
                          path, start, event.n_tokens, event.k, n * 8, in.remaining());
  }
  event.routed.resize(n);
  event.weights.resize(n);
  MOENAV_RETURN_IF_ERROR(in.read(event.routed.data(), n, "routed experts"));
  MOENAV_RETURN_IF_ERROR(in.read(event.weights.data(), n, "routing weights"));
  MOENAV_RETURN_IF_ERROR(check_experts(path, start, event.routed, trace.n_experts, "routed"));
  event.speculation.assign(static_cast<size_t>(trace.speculation_depth), {});
  for (TraceSpeculation& guess : event.speculation) {
    int32_t target = 0;
    MOENAV_RETURN_IF_ERROR(in.read(&target, 1, "a speculation target"));
    if (target < -1 || target >= trace.n_layers) {
      return Status::errorf("{}: record at byte {}: speculation target layer {} out of range", path,
                            start, target);
    }
    guess.target = target;
    if (target < 0) continue;
    guess.predictions.resize(n);
    MOENAV_RETURN_IF_ERROR(in.read(guess.predictions.data(), n, "speculated experts"));
    MOENAV_RETURN_IF_ERROR(check_experts(path, start, guess.predictions, trace.n_experts, "speculated"));
  }
  return ok_status();
}

}  // namespace

int64_t RoutingTrace::tokens() const {
  if (layers.empty()) return 0;
  int64_t first = layers.front().layer;
  for (const TraceLayer& event : layers) first = std::min(first, event.layer);
  int64_t total = 0;
  for (const TraceLayer& event : layers) if (event.layer == first) total += event.n_tokens;
  return total;
}

RoutingTraceWriter::RoutingTraceWriter(const Model& model, int depth)
    : model_(model), depth_(depth), stats_(RoutingStats::zeros(model.config, true)) {}

RoutingTraceWriter::~RoutingTraceWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

Expected<std::unique_ptr<RoutingTraceWriter>> RoutingTraceWriter::open(const std::string& path,
                                                                       const Model& model,
                                                                       int speculation_depth) {
  if (speculation_depth < 0 || speculation_depth > kMaxDepth) {
    return Status::errorf("trace speculation depth {} must be between 0 and {}", speculation_depth,
                          kMaxDepth);
  }
  std::unique_ptr<RoutingTraceWriter> writer(new RoutingTraceWriter(model, speculation_depth));
  writer->path_ = path;
  writer->file_ = std::fopen(path.c_str(), "wb");
  if (writer->file_ == nullptr) return Status::errorf("{}: cannot create trace file", path);
  const uint32_t header[4] = {kVersion, static_cast<uint32_t>(model.config.n_layers),
                              static_cast<uint32_t>(model.config.n_experts),
                              static_cast<uint32_t>(speculation_depth)};
  const uint64_t reserved = 0;
  writer->write(kMagic, sizeof(kMagic));
  writer->write(header, sizeof(header));
  writer->write(&reserved, sizeof(reserved));
  return writer;
}

void RoutingTraceWriter::write(const void* data, size_t bytes) {
  if (!status_.ok() || bytes == 0) return;
  if (std::fwrite(data, 1, bytes, file_) != bytes) status_ = Status::errorf("{}: write failed", path_);
}

void RoutingTraceWriter::record(const LayerPlan& plan) {
  const ModelConfig& config = model_.config;
  const uint32_t head[4] = {kLayerMarker, static_cast<uint32_t>(plan.layer),
                            static_cast<uint32_t>(plan.n_tokens), static_cast<uint32_t>(plan.k)};
  write(head, sizeof(head));
  write(plan.routed.data(), plan.routed.size_bytes());
  write(plan.weights.data(), plan.weights.size_bytes());
  for (int distance = 1; distance <= depth_; ++distance) {
    const int64_t target = moe_layer_ahead(config, plan.layer, distance);
    const int32_t target32 = static_cast<int32_t>(target);
    write(&target32, sizeof(target32));
    if (target < 0) continue;
    speculate_experts(config, model_.weights.layers[static_cast<size_t>(target)], plan.normed,
                      plan.n_tokens, plan.k, plan.pool, predictions_);
    write(predictions_.data(), predictions_.size() * sizeof(int32_t));
  }
  // Statistics; transitions only between consecutive MoE layers of one step.
  const bool follows = previous_layer_ >= 0 && moe_layer_ahead(config, previous_layer_, 1) == plan.layer &&
                       static_cast<int64_t>(previous_routed_.size()) == plan.n_tokens * previous_k_;
  if (plan.layer == first_moe_layer(config)) stats_.tokens += plan.n_tokens;
  stats_.add(config, plan.layer, plan.n_tokens, plan.k, plan.routed, plan.weights,
             follows ? previous_layer_ : -1, previous_k_, previous_routed_);
  previous_layer_ = plan.layer;
  previous_k_ = plan.k;
  previous_routed_.assign(plan.routed.begin(), plan.routed.end());
  ++records_;
}

Status RoutingTraceWriter::close() {
  if (file_ != nullptr) {
    if (std::fclose(file_) != 0 && status_.ok()) status_ = Status::errorf("{}: close failed", path_);
    file_ = nullptr;
  }
  return status_;
}

Expected<RoutingTrace> read_routing_trace(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return Status::errorf("{}: cannot open trace file", path);
  std::vector<uint8_t> bytes;
  uint8_t buffer[1 << 16];
  size_t got = 0;
  while ((got = std::fread(buffer, 1, sizeof(buffer), file)) > 0) bytes.insert(bytes.end(), buffer, buffer + got);
  std::fclose(file);
  ByteReader in(path, std::move(bytes));
  char magic[8];
  MOENAV_RETURN_IF_ERROR(in.read(magic, 8, "the magic"));
  if (std::memcmp(magic, kMagic, 8) != 0) {
    return Status::errorf("{}: not a moenav routing trace (bad magic; write one with `moenav trace`)", path);
  }
  uint32_t header[4];
  uint64_t reserved = 0;
  MOENAV_RETURN_IF_ERROR(in.read(header, 4, "the header"));
  MOENAV_RETURN_IF_ERROR(in.read(&reserved, 1, "the header"));
  if (header[0] != kVersion) {
    return Status::errorf("{}: trace version {} (this build reads version {})", path, header[0], kVersion);
  }
  RoutingTrace trace;
  trace.n_layers = header[1];
  trace.n_experts = header[2];
  trace.speculation_depth = static_cast<int>(header[3]);
  if (trace.n_layers < 1 || trace.n_layers > 4096 || trace.n_experts < 1 || trace.n_experts > 65536 ||
      trace.speculation_depth > kMaxDepth) {
    return Status::errorf("{}: header has {} layers, {} experts, speculation depth {}: out of range",
                          path, trace.n_layers, trace.n_experts, trace.speculation_depth);
  }
  while (!in.done()) {
    TraceLayer event;
    MOENAV_RETURN_IF_ERROR(read_layer(in, path, trace, event));
    trace.layers.push_back(std::move(event));
  }
  return trace;
}

RoutingStats trace_statistics(const RoutingTrace& trace, const ModelConfig& config) {
  RoutingStats stats = RoutingStats::zeros(config, true);
  const TraceLayer* previous = nullptr;
  const int64_t first = first_moe_layer(config);
  for (const TraceLayer& event : trace.layers) {
    const bool follows = previous != nullptr && moe_layer_ahead(config, previous->layer, 1) == event.layer &&
                         previous->n_tokens == event.n_tokens;
    if (event.layer == first) stats.tokens += event.n_tokens;
    stats.add(config, event.layer, event.n_tokens, event.k, event.routed, event.weights,
              follows ? previous->layer : -1, follows ? previous->k : 0,
              follows ? std::span<const int32_t>(previous->routed) : std::span<const int32_t>());
    previous = &event;
  }
  return stats;
}

}  // namespace moenav
