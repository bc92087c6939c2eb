// The GPU tier of the expert store for the CUDA decoder. Experts stay in host memory (the model's
// weights) and are copied on demand into a pool of device slots; ExpertCache decides which key
// holds which slot, so every replacement policy (lru, lfu, lfru, priority, static), placement
// rules, the layer or global scope and warm start work as on the CPU tiers. A miss is fetched
// over PCIe into a slot (miss.policy fetch), or into a staging slot when the policy does not
// cache it (static placement), computed on the CPU from the host copy while the GPU runs the
// other experts (cpu, Fiddler's policy), computed from a low-precision copy of every expert kept
// on the device (lowbit, HOBBIT's policy; miss.lowbit_type q4_0 or q8_0), or dropped (skip). The host copies are page-locked once
// (cudaHostRegister) so copies run at full PCIe speed on the context's copy stream, overlapping
// the kernels: per slot, a `loaded` event (recorded after its copy, waited for by the kernels
// that read it) and a `freed` event (recorded after the kernels of its last use, waited for by
// the next copy into it) keep a slot from being read before it is filled or overwritten while
// a queued kernel still reads it. Where the driver refuses to pin, each copy is synchronous on
// the compute stream.
//
// prefetch.policy next_layer_gate and trace work as on the CPU tiers (prefetcher.h): after a
// layer is routed, the experts predicted for the next prefetch.depth MoE layers are loaded on
// the copy stream while the layer computes.
//
// miss.policy split computes a miss's gate and up projections on the CPU while its down
// projection (a third of its bytes) is copied to the GPU, which then runs it on the CPU's
// activations: PCIe and the CPU work on one expert at once (at most kSplitSlots a layer; the
// rest run wholly on the CPU). miss.policy auto serves each decode step's misses (up to
// kAutoSplitTokens rows) by fetch, cpu or split, whichever finishes the step's misses soonest by
// rates measured at creation on the largest expert (choose_miss_service); larger batches fetch
// (the GPU's compute wins).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "backend/cuda.h"
#include "backend/cuda_ops.h"
#include "core/thread_pool.h"
#include "experts/expert_cache.h"
#include "experts/prefetcher.h"
#include "experts/routing_stats.h"
#include "moenav/engine_config.h"
#include "moenav/expert_counters.h"
#include "model/model_weights.h"
#include "moenav/status.h"

namespace moenav {

struct Model;

// How many device slots the experts get. cache_size is placement.expert_cache.size: "all" (no
// cache), "auto" (what the budget leaves after the resident weights and a reserve for
// activations and the KV cache), a slot count per MoE layer, or a byte size. cached is false
// when every expert fits anyway. 0 slots keeps every expert off the device: each use is a miss
// (miss.policy cpu computes them all on the CPU, as llama.cpp's --cpu-moe).
struct DeviceSlotPlan {
  bool cached = false;
  int64_t slots_per_layer = 0;
  int64_t slots = 0;  // in all: what the global scope pools (at least slots_per_layer per layer)
  int64_t slot_bytes = 0;  // one expert's gate, up and down, each 256-byte aligned
};
struct DeviceSlotInputs {
  int64_t budget_bytes = 0;    // the device budget (0: unknown, then "auto" keeps all)
  int64_t resident_bytes = 0;  // everything but the experts
  int64_t reserve_bytes = 0;   // activations and KV cache
  int64_t slot_bytes = 0;
  int64_t n_moe_layers = 0;
  int64_t n_experts = 0;
  int64_t miss_bytes = 0;      // the miss policy's device buffers: lowbit's copies, split's down slots
};
Expected<DeviceSlotPlan> plan_device_slots(std::string_view cache_size,
                                           const DeviceSlotInputs& inputs);

// The device bytes one expert slot takes: the largest expert's projections, 256-byte aligned.
int64_t device_slot_bytes(const Model& model);
// The device bytes the miss policy keeps: lowbit's copies of every expert, the down-projection
// slots of split and auto (0 for other policies).
Expected<int64_t> device_miss_bytes(const Model& model, const EngineConfig& config);

// How one miss of a step can be served: its bytes fetched over PCIe (fetch_seconds), computed on
// the CPU for all the step's rows (cpu_seconds), or split, gate and up (gate_up_share of its
// bytes) on the CPU while the down projection is fetched.
struct MissCost {
  double fetch_seconds = 0.0;
  double cpu_seconds = 0.0;
  double gate_up_share = 2.0 / 3.0;
};
enum class MissService : uint8_t { Fetch, Cpu, Split };
// miss.policy auto: each miss in turn takes the service after which PCIe's and the CPU's work
// for the step, run side by side, ends soonest (ties: fetch, which also caches the expert);
// at most max_splits are split.
std::vector<MissService> choose_miss_service(std::span<const MissCost> misses, int max_splits);

class DeviceExpertCache {
 public:
  static constexpr int64_t kAutoSplitTokens = 4;
  static constexpr int kSplitSlots = 2;  // down projections of split misses on the device per layer

  // pool: the CPU threads that compute misses (cpu and auto policies).
  static Expected<std::unique_ptr<DeviceExpertCache>> create(cuda::Context& context,
                                                             const Model& model,
                                                             const EngineConfig& config,
                                                             const DeviceSlotPlan& plan,
                                                             ThreadPool& pool);

  // The experts the current step of `layer` uses (each once) for n_tokens rows; top1[i] = 1 when
  // experts[i] is some token's first choice (skip never drops those). routed: the [n_tokens, k]
  // selection (-1 for none); host_rows: the layer's normed MoE input [n_tokens, hidden] on the
  // host, needed when needs_host_rows().
  Status begin_layer(int64_t layer, std::span<const int32_t> experts,
                     std::span<const uint8_t> top1, int64_t n_tokens,
                     std::span<const int32_t> routed, int64_t k, const float* host_rows);
  // Device weights for `expert` this step, copied in if it missed; `skipped` when the miss
  // policy dropped it.
  struct Lease {
    cuda::DeviceFfn weights;
    bool skipped = false;
    const FfnWeights* host = nullptr;  // set when the miss policy computes it on the CPU instead
    // With host, for a split miss: its down projection on the device, to run (after await_down)
    // on the CPU's gate/up activations; released after those kernels are queued.
    cuda::DeviceWeight down;
  };
  Expected<Lease> acquire(int64_t layer, int32_t expert);
  // A split miss: the compute stream waits for its down projection's copy.
  Status await_down(int32_t expert);
  // After the kernels that read the lease's weights are queued.
  Status release(int64_t layer, int32_t expert);
  void end_layer(int64_t layer);

  // Whether misses may be computed on the CPU (miss.policy cpu): the decoder then brings the
  // layer's normed rows to the host.
  bool computes_on_cpu() const { return miss_ == MissPolicy::Cpu || auto_split_; }  // split included
  // Whether begin_layer needs the normed rows on the host (CPU misses, next-layer gate prefetch).
  bool needs_host_rows() const {
    return computes_on_cpu() || (prefetcher_ && prefetcher_->policy() == PrefetchPolicy::NextLayerGate);
  }

  // miss.policy auto: the rates it splits misses by, measured at creation (bytes per second of one
  // expert copied to the device, and computed on the CPU for one token).
  double fetch_bytes_per_second() const { return fetch_rate_; }
  double cpu_bytes_per_second() const { return cpu_rate_; }

  ExpertCounters counters() const;
  void reset_counters();
  int64_t slot_count() const { return cache_->slot_count(); }

 private:
  DeviceExpertCache(cuda::Context& context, const Model& model) : context_(context), model_(model) {}
  // Copies the expert of `key` into `buffer` from `offset` on, the slot sync_[sync] (slot_count()
  // is the staging slot); returns its weights there.
  Expected<cuda::DeviceFfn> copy_in(int32_t key, const cuda::DeviceBuffer& buffer, int64_t offset,
                                    int32_t sync);
  // The compute stream's use of slot sync_[sync]: wait for its copy, or mark its last use.
  Status await_loaded(int32_t sync);
  Status mark_freed(int32_t sync);
  int32_t staging_sync() const { return static_cast<int32_t>(slot_weights_.size()); }
  int32_t split_sync(int slot) const { return staging_sync() + 1 + slot; }
  Status load(const SlotLoad& load);  // into its slot
  Status pin_experts();  // page-locks the host copies of every expert
  Status measure_rates(ThreadPool& pool);  // fetch_rate_, cpu_rate_ from the largest expert
  // auto: each miss of the step fetched, computed on the CPU or split (choose_miss_service);
  // split: the first kSplitSlots misses split, the rest on the CPU. Fills misses_ and
  // split_slot_.
  void plan_misses(int64_t layer, std::span<const int32_t> experts, int64_t n_tokens);
  // Queues the down projection of the layer's split miss `expert` into its down slot.
  Status load_split_down(int64_t layer, int32_t expert);
  // Copies `tensor` into `buffer` at `offset` on the copy stream (or synchronously unpinned).
  Status copy_tensor(const TensorView& tensor, const cuda::DeviceBuffer& buffer, int64_t offset,
                     cuda::DeviceWeight& out);

  cuda::Context& context_;
  const Model& model_;
  std::unique_ptr<RoutingStats> stats_;  // warm start (the cache keeps a pointer)
  std::unique_ptr<ExpertCache> cache_;
  cuda::DeviceBuffer slots_;    // [slot_count, slot_bytes]
  cuda::DeviceBuffer staging_;  // one slot for misses the policy does not cache
  int64_t slot_bytes_ = 0;
  std::vector<cuda::DeviceFfn> slot_weights_;  // [slot_count]: what each slot holds
  std::vector<SlotLoad> loads_;
  int64_t host_to_device_bytes_ = 0;
  bool pinned_ = false;
  MissPolicy miss_ = MissPolicy::Fetch;
  bool auto_split_ = false;    // miss.policy auto
  bool split_policy_ = false;  // miss.policy split
  double fetch_rate_ = 0.0, cpu_rate_ = 0.0;
  std::vector<MissPolicy> misses_;  // this step's per-expert policies (auto, split)
  std::vector<int32_t> split_slot_;  // [n_experts]: this step's down slot of a split miss, or -1
  std::vector<cuda::DeviceWeight> split_downs_weights_;  // [kSplitSlots]: what each holds
  int64_t miss_split_ = 0;
  cuda::DeviceBuffer split_downs_;  // [kSplitSlots, split_slot_bytes_]
  int64_t split_slot_bytes_ = 0;
  struct SlotSync {
    cuda::Event loaded, freed;
  };
  std::vector<SlotSync> sync_;    // each slot, the staging slot, then the split down slots
  std::vector<int32_t> leased_;   // [n_experts]: the sync_ entry each acquired expert reads, or -1
  std::unique_ptr<Prefetcher> prefetcher_;
  std::vector<PrefetchRequest> requests_;
  ThreadPool* pool_ = nullptr;
  cuda::DeviceBuffer lowbit_;                   // miss.policy lowbit: every expert's copy
  std::vector<cuda::DeviceFfn> lowbit_weights_; // [n_layers * n_experts] in lowbit_
  Status upload_lowbit(DType type);
};

}  // namespace moenav
