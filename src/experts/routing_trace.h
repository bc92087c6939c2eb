// Routing traces: every MoE layer's routing of every forward step (per token: experts and
// weights), plus the next-layer gate speculation made from that layer's input, in the order the
// store saw them. The cache simulator replays a trace under any cache policy, capacity, miss and
// prefetch policy (cache_simulator.h); statistics for placement, warm starts and pruning are
// summed from it (routing_stats.h).
//
// File (little-endian): a 32-byte header
//   char magic[8] = "MNVTRACE"; u32 version = 1; u32 n_layers; u32 n_experts;
//   u32 speculation_depth; u64 reserved = 0
// then one record per MoE layer visit:
//   u32 marker = 0x5259414c ("LAYR"); u32 layer; u32 n_tokens; u32 k;
//   i32 experts[n_tokens * k] (-1 = dropped); f32 weights[n_tokens * k];
//   speculation_depth times: i32 target_layer (-1 = none), and when >= 0 i32 predicted[n_tokens * k]
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "experts/expert_store.h"
#include "experts/routing_stats.h"
#include "moenav/status.h"

namespace moenav {

struct Model;

struct TraceSpeculation {
  int64_t target = -1;               // the MoE layer predicted
  std::vector<int32_t> predictions;  // [T, k]
};

struct TraceLayer {
  int64_t layer = 0;
  int64_t n_tokens = 0;
  int64_t k = 0;
  std::vector<int32_t> routed;  // [T, k]
  std::vector<float> weights;   // [T, k]
  std::vector<TraceSpeculation> speculation;  // distance 1 .. speculation_depth
};

struct RoutingTrace {
  int64_t n_layers = 0;
  int64_t n_experts = 0;
  int speculation_depth = 0;
  std::vector<TraceLayer> layers;  // in the order the store saw them
  int64_t tokens() const;          // tokens at the first MoE layer, over all steps
};

class RoutingTraceWriter {
 public:
  // speculation_depth: how many MoE layers ahead to record gate speculation for (0 = none).
  static Expected<std::unique_ptr<RoutingTraceWriter>> open(const std::string& path,
                                                            const Model& model,
                                                            int speculation_depth);
  ~RoutingTraceWriter();
  // One layer visit (called by ExpertStore::begin_layer). Write errors surface in close().
  void record(const LayerPlan& plan);
  Status close();
  const RoutingStats& stats() const { return stats_; }
  int64_t records() const { return records_; }

 private:
  RoutingTraceWriter(const Model& model, int depth);
  void write(const void* data, size_t bytes);
  const Model& model_;
  int depth_;
  std::string path_;
  std::FILE* file_ = nullptr;
  Status status_;
  RoutingStats stats_;
  int64_t records_ = 0;
  int64_t previous_layer_ = -1;  // the last MoE layer recorded and its routing, for transitions
  int64_t previous_k_ = 0;
  std::vector<int32_t> previous_routed_;
  std::vector<int32_t> predictions_;
};

// Reads a whole trace; corrupt or truncated files are errors that name the byte offset.
Expected<RoutingTrace> read_routing_trace(const std::string& path);

// Statistics of a trace (counts, weight sums, transitions), as the writer sums them.
RoutingStats trace_statistics(const RoutingTrace& trace, const ModelConfig& config);

}  // namespace moenav
