#include "experts/cached_expert_store.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "experts/gate_speculation.h"
#include "model/model.h"

namespace moenav {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

CachedExpertStore::CachedExpertStore(const Model& model, CachedStoreParts parts)
    : model_(model),
      cache_(std::move(parts.cache)),
      reader_(std::move(parts.reader)),
      lowbit_(std::move(parts.lowbit)),
      prefetcher_(std::move(parts.prefetcher)),
      slot_memory_(cache_->slot_count() * reader_->slot_bytes()),
      staging_(reader_->slot_bytes()),
      slot_states_(new SlotState[static_cast<size_t>(cache_->slot_count())]),
      io_(std::make_unique<IoQueue>(parts.io_threads, parts.max_bytes_in_flight)) {}

CachedExpertStore::~CachedExpertStore() { io_.reset(); }

Expected<std::unique_ptr<CachedExpertStore>> CachedExpertStore::create(const Model& model,
                                                                        CachedStoreParts parts) {
  std::unique_ptr<CachedExpertStore> store(new CachedExpertStore(model, std::move(parts)));
  const std::vector<SlotLoad> initial = store->cache_->take_initial_loads();
  for (const SlotLoad& load : initial) store->issue(load, true);
  for (const SlotLoad& load : initial) store->wait_ready(load.slot);
  if (store->failed_) return store->failure_;
  store->stall_seconds_ = 0.0;
  return store;
}

void CachedExpertStore::io_failure(const Status& status) const {
  // An I/O error in the middle of a forward pass cannot be returned through it; the model file
  // became unreadable, which no configuration can fix.
  std::fprintf(stderr, "moenav: fatal: expert read failed: %s\n", status.message().c_str());
  std::abort();
}

void CachedExpertStore::issue(const SlotLoad& load, bool urgent) {
  SlotState& state = slot_states_[static_cast<size_t>(load.slot)];
  const int64_t n_experts = model_.config.n_experts;
  const int64_t layer = load.key / n_experts;
  const auto expert = static_cast<int32_t>(load.key % n_experts);
  const uint64_t generation = state.generation.load() + 1;
  state.generation.store(generation);
  state.by_prefetch = load.prefetch;
  uint8_t* destination = slot_data(load.slot);
  state.weights = reader_->weights_in(layer, expert, destination);
  io_->submit(reader_->payload_bytes(layer, expert), urgent, [this, &state, generation, layer, expert, destination] {
    std::lock_guard<std::mutex> lock(state.io);
    // A load superseded before it started (the slot was given to another expert, whose load
    // may even have run first: demand loads overtake prefetches) neither reads nor touches
    // `ready`, which only ever moves forward to the slot's current generation.
    if (state.generation.load() != generation) return;
    auto bytes = reader_->read(layer, expert, destination);
    if (bytes.ok()) {
      disk_bytes_ += *bytes;
    } else {
      std::lock_guard<std::mutex> failure_lock(failure_mutex_);
      failure_ = bytes.status();
      failed_ = true;
    }
    state.ready.store(generation);
    state.ready.notify_all();
  });
}

void CachedExpertStore::wait_ready(int32_t slot) {
  SlotState& state = slot_states_[static_cast<size_t>(slot)];
  const uint64_t generation = state.generation.load();
  uint64_t ready = state.ready.load();
  if (ready != generation) {
    if (state.by_prefetch) ++prefetch_late_;
    const auto start = std::chrono::steady_clock::now();
    while (ready != generation) {
      state.ready.wait(ready);
      ready = state.ready.load();
    }
    stall_seconds_ += seconds_since(start);
  }
  if (failed_) {
    std::lock_guard<std::mutex> lock(failure_mutex_);
    io_failure(failure_);
  }
}

FfnWeights CachedExpertStore::read_staged(int64_t layer, int32_t expert) {
  const auto start = std::chrono::steady_clock::now();
  auto bytes = reader_->read(layer, expert, staging_.data());
  if (!bytes.ok()) io_failure(bytes.status());
  disk_bytes_ += *bytes;
  stall_seconds_ += seconds_since(start);
  return reader_->weights_in(layer, expert, staging_.data());
}

void CachedExpertStore::begin_layer(const LayerPlan& plan) {
  record(plan);
  const int64_t n_experts = model_.config.n_experts;
  std::vector<uint8_t> top1(static_cast<size_t>(n_experts), 0);
  for (int64_t t = 0; t < plan.n_tokens && plan.k > 0; ++t) {
    const int32_t expert = plan.routed[static_cast<size_t>(t * plan.k)];
    if (expert >= 0) top1[static_cast<size_t>(expert)] = 1;
  }
  essential_.clear();
  for (int32_t expert : plan.experts) essential_.push_back(top1[static_cast<size_t>(expert)]);
  loads_.clear();
  cache_->begin_layer(plan.layer, plan.experts, essential_, loads_);
  for (const SlotLoad& load : loads_) issue(load, true);
  if (!prefetcher_) return;
  const ModelConfig& config = model_.config;
  auto speculate = [&](int distance, std::vector<int32_t>& predictions) -> int64_t {
    const int64_t target = moe_layer_ahead(config, plan.layer, distance);
    if (target < 0) return -1;
    speculate_experts(config, model_.weights.layers[static_cast<size_t>(target)], plan.normed,
                      plan.n_tokens, plan.k, plan.pool, predictions);
    return target;
  };
  prefetcher_->after_routing(plan.layer, plan.n_tokens, plan.k, plan.routed, speculate, requests_);
  for (const PrefetchRequest& request : requests_) {
    loads_.clear();
    cache_->prefetch(request.layer, request.candidates, loads_);
    for (const SlotLoad& load : loads_) issue(load, false);
  }
}

ExpertLease CachedExpertStore::acquire(int64_t layer, int32_t expert) {
  std::optional<SlotLoad> load;
  const ExpertDecision decision = cache_->acquire(layer, expert, load);
  if (load) issue(*load, true);
  ExpertLease lease;
  switch (decision.source) {
    case ExpertSource::Slot:
      wait_ready(decision.slot);
      lease.weights = slot_states_[static_cast<size_t>(decision.slot)].weights;
      break;
    case ExpertSource::Staging:
    case ExpertSource::Cpu:  // the host copy is on disk here: read it, compute on the CPU
      lease.weights = read_staged(layer, expert);
      break;
    case ExpertSource::LowBit:
      lease.weights = lowbit_->weights(layer, expert);
      break;
    case ExpertSource::Skip:
      lease.skipped = true;
      break;
  }
  return lease;
}

void CachedExpertStore::release(int64_t layer, int32_t expert) { cache_->release(layer, expert); }

void CachedExpertStore::end_layer(int64_t layer) { cache_->end_layer(layer); }

ExpertCounters CachedExpertStore::counters() const {
  ExpertCounters counters = cache_->counters();
  counters.stall_seconds = stall_seconds_;
  counters.prefetch_late = prefetch_late_;
  counters.disk_to_host_bytes = disk_bytes_.load();
  counters.io_seconds = io_->busy_seconds();
  counters.max_bytes_in_flight = io_->max_bytes_in_flight_seen();
  return counters;
}

void CachedExpertStore::reset_counters() {
  cache_->reset_counters();
  stall_seconds_ = 0.0;
  prefetch_late_ = 0;
  disk_bytes_ = 0;
  io_->reset_statistics();
}

}  // namespace moenav
