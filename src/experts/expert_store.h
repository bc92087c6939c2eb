// Where each routed expert's weights live and what using one costs. The MoE layer tells the store
// what a layer will need (begin_layer), then asks for each expert (acquire) and hands it back
// (release); the store decides whether it is resident, fetched from a slower tier into a cache
// slot, or (by the miss policy) computed elsewhere, from a low-bit copy, or skipped. Router and
// Combine never see any of this, and no placement may change the numbers (shared/DESIGN.md §2).
//
// Tiers (moenav/expert_counters.h): device (GPU slots, the CUDA build), host (a host-memory cache,
// or pinned host copies under a device cache), disk (the model file, read with pread). The CPU
// build's fast tier is the host cache over the disk tier (cached_expert_store.h).
#pragma once

#include <cstdint>
#include <span>

#include "experts/memory_planner.h"
#include "model/model_weights.h"
#include "moenav/expert_counters.h"

namespace moenav {

class ThreadPool;
class RoutingTraceWriter;

// What one MoE layer will do in this forward step, as the store sees it.
struct LayerPlan {
  int64_t layer = 0;
  int64_t n_tokens = 0;
  int64_t k = 0;
  std::span<const int32_t> routed;   // [T, k] experts after the routing policy (-1 = dropped)
  std::span<const float> weights;    // [T, k]
  std::span<const int32_t> experts;  // experts with work, in first-use order (Dispatch order)
  const float* normed = nullptr;     // [T, hidden] the layer's MoE input (gate speculation)
  ThreadPool* pool = nullptr;        // for the speculative router matmul
};

// An expert handed out by acquire(): what to compute with, where it is, or that the miss policy
// dropped it (its (row, slot) pairs then contribute nothing, like a skipped selection).
struct ExpertLease {
  FfnWeights weights;       // valid until release()
  Tier tier = Tier::Host;   // device: run on the GPU; host: run on the CPU
  bool skipped = false;
};

class ExpertStore {
 public:
  virtual ~ExpertStore() = default;
  // The experts `plan.layer` will use this step. Records the layer to the routing trace, when one
  // is attached; a cache issues loads and prefetches here.
  virtual void begin_layer(const LayerPlan& plan) { record(plan); }
  virtual ExpertLease acquire(int64_t layer, int32_t expert) = 0;
  virtual void release(int64_t /*layer*/, int32_t /*expert*/) {}
  virtual void end_layer(int64_t /*layer*/) {}

  virtual ExpertCounters counters() const { return {}; }
  virtual void reset_counters() {}
  // The memory plan the store was laid out by (printed by bench, checked against the budget).
  const MemoryPlan& memory_plan() const { return plan_; }
  void set_memory_plan(MemoryPlan plan) { plan_ = std::move(plan); }
  // Every later begin_layer is written to `trace` (not owned; nullptr detaches).
  void set_trace(RoutingTraceWriter* trace) { trace_ = trace; }

 protected:
  void record(const LayerPlan& plan);

 private:
  MemoryPlan plan_;
  RoutingTraceWriter* trace_ = nullptr;
};

// Every expert resident where the model file is mapped: the baseline placement. Every use is a
// host hit.
class ResidentExpertStore final : public ExpertStore {
 public:
  explicit ResidentExpertStore(const ModelWeights& weights) : weights_(weights) {}
  void begin_layer(const LayerPlan& plan) override {
    record(plan);
    counters_.tier(Tier::Host).hits += static_cast<int64_t>(plan.experts.size());
  }
  ExpertLease acquire(int64_t layer, int32_t expert) override {
    return {weights_.layers[static_cast<size_t>(layer)].experts[static_cast<size_t>(expert)],
            Tier::Host, false};
  }
  ExpertCounters counters() const override { return counters_; }
  void reset_counters() override { counters_ = {}; }

 private:
  const ModelWeights& weights_;
  ExpertCounters counters_;
};

}  // namespace moenav
