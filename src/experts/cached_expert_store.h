// The tiered expert store of the CPU build: a host-memory cache of expert slots (the fast tier)
// over the model file (the disk tier). The bookkeeping (expert_cache.h) decides hits, misses,
// slots and evictions; this class moves the bytes: loads run on asynchronous I/O workers
// (expert_io.h) with a bound on bytes in flight, demand loads ahead of prefetches, so the reads
// of a layer's later experts and of the next layers' predicted experts overlap computation. A
// slot's bytes are used only once its load has completed (a per-slot generation), and a slot in
// use is never evicted, so placement never changes the numbers.
//
// The CUDA build adds a device tier with the same interfaces: device slots filled from pinned
// host copies, miss.policy cpu computing on the host copy (ExpertLease::tier says where).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "experts/expert_cache.h"
#include "experts/expert_io.h"
#include "experts/expert_store.h"
#include "experts/lowbit_experts.h"
#include "experts/prefetcher.h"

namespace moenav {

struct Model;

struct CachedStoreParts {
  std::unique_ptr<ExpertCache> cache;
  std::unique_ptr<ExpertReader> reader;
  std::unique_ptr<LowBitExperts> lowbit;     // miss.policy = lowbit
  std::unique_ptr<Prefetcher> prefetcher;    // null: no prefetch
  int io_threads = 2;
  int64_t max_bytes_in_flight = 0;
};

class CachedExpertStore final : public ExpertStore {
 public:
  // Fills the initial placement (pinned rules, static placement, warm start) before returning.
  static Expected<std::unique_ptr<CachedExpertStore>> create(const Model& model, CachedStoreParts parts);
  ~CachedExpertStore() override;

  void begin_layer(const LayerPlan& plan) override;
  ExpertLease acquire(int64_t layer, int32_t expert) override;
  void release(int64_t layer, int32_t expert) override;
  void end_layer(int64_t layer) override;
  ExpertCounters counters() const override;
  void reset_counters() override;

 private:
  struct SlotState {
    std::mutex io;                      // held by the worker reading into the slot
    std::atomic<uint64_t> generation{0};
    std::atomic<uint64_t> ready{0};     // generation whose bytes are in the slot
    bool by_prefetch = false;
    FfnWeights weights;                 // views into the slot for its current expert
  };
  CachedExpertStore(const Model& model, CachedStoreParts parts);
  uint8_t* slot_data(int32_t slot) const { return slot_memory_.data() + slot * reader_->slot_bytes(); }
  void issue(const SlotLoad& load, bool urgent);
  void wait_ready(int32_t slot);
  FfnWeights read_staged(int64_t layer, int32_t expert);
  [[noreturn]] void io_failure(const Status& status) const;

  const Model& model_;
  std::unique_ptr<ExpertCache> cache_;
  std::unique_ptr<ExpertReader> reader_;
  std::unique_ptr<LowBitExperts> lowbit_;
  std::unique_ptr<Prefetcher> prefetcher_;
  HostBuffer slot_memory_;                     // [slots, slot_bytes]
  HostBuffer staging_;                         // [slot_bytes] one transient expert
  std::unique_ptr<SlotState[]> slot_states_;
  std::vector<uint8_t> essential_;
  std::vector<SlotLoad> loads_;
  std::vector<PrefetchRequest> requests_;
  std::vector<int32_t> predictions_;
  // Timing counters (the rest come from the bookkeeping).
  double stall_seconds_ = 0.0;
  int64_t prefetch_late_ = 0;
  std::atomic<int64_t> disk_bytes_{0};
  std::atomic<bool> failed_{false};
  mutable std::mutex failure_mutex_;
  Status failure_;
  std::unique_ptr<IoQueue> io_;  // last: its workers stop before the memory they fill goes away
};

}  // namespace moenav
