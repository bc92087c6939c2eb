#include "runtime/device_expert_cache.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "core/byte_size.h"
#include "experts/gate_speculation.h"
#include "experts/lowbit_experts.h"
#include "experts/placement_rules.h"
#include "experts/routing_stats.h"
#include "experts/store_factory.h"
#include "layers/batch.h"
#include "layers/ffn.h"
#include "model/model.h"

namespace moenav {
namespace {

constexpr int64_t kAlignment = 256;  // device start of each projection

int64_t aligned(int64_t bytes) { return (bytes + kAlignment - 1) / kAlignment * kAlignment; }

bool is_count(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

Expected<DType> lowbit_type(const EngineConfig& config) {
  const auto type = dtype_from_name(config.miss.lowbit_type);
  if (!type) return Status::errorf("miss.lowbit_type '{}' is not a type name", config.miss.lowbit_type);
  return *type;
}

}  // namespace

Expected<DeviceSlotPlan> plan_device_slots(std::string_view cache_size,
                                           const DeviceSlotInputs& in) {
  DeviceSlotPlan plan;
  plan.slot_bytes = in.slot_bytes;
  plan.slots_per_layer = in.n_experts;
  if (cache_size == "all" || in.n_moe_layers == 0 || in.slot_bytes <= 0) return plan;
  const int64_t layer_slot_bytes = in.slot_bytes * in.n_moe_layers;
  int64_t per_layer = 0;
  std::string source;
  if (cache_size == "auto") {
    if (in.budget_bytes <= 0) return plan;  // no budget: everything goes on the device
    // One slot's worth more is the staging slot.
    const int64_t available =
        in.budget_bytes - in.resident_bytes - in.lowbit_bytes - in.reserve_bytes - in.slot_bytes;
    per_layer = std::max<int64_t>(0, available) / layer_slot_bytes;
    source = fmt::format("the GPU budget {} less {} of other weights{} and {} for activations and "
                         "the KV cache", format_bytes(in.budget_bytes), format_bytes(in.resident_bytes),
                         in.lowbit_bytes > 0 ? fmt::format(", {} of low-precision expert copies",
                                                           format_bytes(in.lowbit_bytes)) : "",
                         format_bytes(in.reserve_bytes));
  } else if (is_count(cache_size)) {
    const char* end = cache_size.data() + cache_size.size();
    if (std::from_chars(cache_size.data(), end, per_layer).ec != std::errc()) {
      return Status::errorf("placement.expert_cache.size '{}': not a slot count this size", cache_size);
    }
    source = fmt::format("{} slots per MoE layer", per_layer);
  } else {
    auto bytes = parse_byte_size(cache_size);
    if (!bytes.ok()) {
      return Status::errorf("placement.expert_cache.size '{}' is not all, auto, a slot count or a "
                            "byte size: {}", cache_size, bytes.status().message());
    }
    per_layer = *bytes / layer_slot_bytes;
    source = format_bytes(*bytes);
  }
  if (per_layer >= in.n_experts) return plan;
  if (per_layer < 1) {
    return Status::errorf("placement.expert_cache.size '{}': {} leaves less than one device slot "
                          "({} per expert) for each of the {} MoE layers; raise --gpu-memory or "
                          "the cache size", cache_size, source, format_bytes(in.slot_bytes), in.n_moe_layers);
  }
  plan.cached = true;
  plan.slots_per_layer = per_layer;
  return plan;
}

int64_t device_slot_bytes(const Model& model) {
  int64_t largest = 0;
  for (const LayerWeights& layer : model.weights.layers) {
    for (const FfnWeights& expert : layer.experts) {
      largest = std::max(largest, aligned(expert.gate.bytes()) + aligned(expert.up.bytes()) +
                                      aligned(expert.down.bytes()));
    }
  }
  return largest;
}

Expected<int64_t> device_lowbit_bytes(const Model& model, const EngineConfig& config) {
  if (config.miss.policy != "lowbit") return int64_t{0};
  MOENAV_ASSIGN_OR_RETURN(const DType type, lowbit_type(config));
  auto lowbit = LowBitExperts::planned_bytes(model, type);
  if (!lowbit.ok()) return lowbit.status();
  // Each projection starts 256-byte aligned on the device.
  int64_t projections = 0;
  for (const LayerWeights& layer : model.weights.layers) projections += 3 * static_cast<int64_t>(layer.experts.size());
  return *lowbit + projections * (kAlignment - 1);
}

Status DeviceExpertCache::upload_lowbit(DType type) {
  MOENAV_ASSIGN_OR_RETURN(std::unique_ptr<LowBitExperts> copies, LowBitExperts::create(model_, type));
  const ModelConfig& c = model_.config;
  int64_t bytes = 0;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const int64_t n = static_cast<int64_t>(model_.weights.layers[static_cast<size_t>(l)].experts.size());
    for (int32_t e = 0; e < n; ++e) {
      const FfnWeights& w = copies->weights(l, e);
      bytes += aligned(w.gate.bytes()) + aligned(w.up.bytes()) + aligned(w.down.bytes());
    }
  }
  MOENAV_ASSIGN_OR_RETURN(lowbit_, context_.allocate(bytes, "the low-precision expert copies (miss.policy lowbit)"));
  lowbit_weights_.resize(static_cast<size_t>(c.n_layers * c.n_experts));
  int64_t offset = 0;
  auto place = [&](const TensorView& tensor, cuda::DeviceWeight& out) -> Status {
    MOENAV_RETURN_IF_ERROR(context_.upload(lowbit_, tensor.data, tensor.bytes(), offset));
    out = {tensor.dtype, tensor.rows(), tensor.cols(), static_cast<uint8_t*>(lowbit_.data()) + offset};
    offset += aligned(tensor.bytes());
    return ok_status();
  };
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const int64_t n = static_cast<int64_t>(model_.weights.layers[static_cast<size_t>(l)].experts.size());
    for (int32_t e = 0; e < n; ++e) {
      const FfnWeights& w = copies->weights(l, e);
      cuda::DeviceFfn& out = lowbit_weights_[static_cast<size_t>(l * c.n_experts + e)];
      MOENAV_RETURN_IF_ERROR(place(w.gate, out.gate));
      MOENAV_RETURN_IF_ERROR(place(w.up, out.up));
      MOENAV_RETURN_IF_ERROR(place(w.down, out.down));
    }
  }
  return ok_status();  // the host copies go with `copies`: the device holds them now
}

Expected<std::unique_ptr<DeviceExpertCache>> DeviceExpertCache::create(cuda::Context& context,
                                                                       const Model& model,
                                                                       const EngineConfig& config,
                                                                       const DeviceSlotPlan& plan,
                                                                       ThreadPool& pool) {
  const ModelConfig& c = model.config;
  MOENAV_ASSIGN_OR_RETURN(const MissPolicy miss, parse_miss_policy(config.miss.policy));
  MOENAV_ASSIGN_OR_RETURN(const PrefetchPolicy prefetch, parse_prefetch_policy(config.prefetch.policy));
  if (config.prefetch.depth < 1) {
    return Status::errorf("prefetch.depth = {} must be >= 1", config.prefetch.depth);
  }
  const std::string& scope = config.placement.expert_cache.scope;
  if (scope != "layer" && scope != "global") {
    return Status::errorf("placement.expert_cache.scope '{}' is not one of: layer, global", scope);
  }
  std::unique_ptr<DeviceExpertCache> cache(new DeviceExpertCache(context, model));
  cache->miss_ = miss;
  cache->pool_ = &pool;
  cache->auto_split_ = config.miss.policy == "auto";
  CacheSettings settings;
  settings.keys = expert_key_space(c, config);
  settings.policy = config.placement.expert_cache.policy;
  settings.global_scope = scope == "global";
  settings.slots_per_partition =
      settings.global_scope ? plan.slots_per_layer * settings.keys.n_moe_layers : plan.slots_per_layer;
  settings.miss = miss;
  settings.fast_tier = Tier::Device;
  settings.key_bytes = expert_key_bytes(model);
  if (!config.placement.rules.empty()) {
    MOENAV_ASSIGN_OR_RETURN(settings.placement, resolve_placement(config.placement.rules, c, true));
  }
  if (!config.placement.expert_cache.warm_start.empty()) {
    MOENAV_ASSIGN_OR_RETURN(RoutingStats stats,
                            load_routing_stats(config.placement.expert_cache.warm_start, c));
    cache->stats_ = std::make_unique<RoutingStats>(std::move(stats));
    settings.warm_start = true;
  }
  settings.stats = cache->stats_.get();
  MOENAV_ASSIGN_OR_RETURN(cache->cache_, ExpertCache::create(std::move(settings)));
  cache->slot_bytes_ = plan.slot_bytes;
  const int64_t slots = cache->cache_->slot_count();
  MOENAV_ASSIGN_OR_RETURN(cache->slots_, context.allocate(slots * plan.slot_bytes,
                                                          fmt::format("{} expert slots", slots)));
  MOENAV_ASSIGN_OR_RETURN(cache->staging_, context.allocate(plan.slot_bytes, "the expert staging slot"));
  cache->slot_weights_.resize(static_cast<size_t>(slots));
  cache->leased_.assign(static_cast<size_t>(c.n_experts), -1);
  cache->pinned_ = cache->pin_experts().ok();  // else every miss is a synchronous copy
  if (cache->pinned_) {
    cache->sync_.resize(static_cast<size_t>(slots + 1));
    for (SlotSync& sync : cache->sync_) {
      MOENAV_ASSIGN_OR_RETURN(sync.loaded, context.create_event());
      MOENAV_ASSIGN_OR_RETURN(sync.freed, context.create_event());
    }
  }
  if (prefetch != PrefetchPolicy::None) {
    cache->prefetcher_ = std::make_unique<Prefetcher>(prefetch, config.prefetch.depth, c, cache->stats_.get());
  }
  if (cache->auto_split_) MOENAV_RETURN_IF_ERROR(cache->measure_rates(pool));
  if (miss == MissPolicy::LowBit) {
    MOENAV_ASSIGN_OR_RETURN(const DType type, lowbit_type(config));
    MOENAV_RETURN_IF_ERROR(cache->upload_lowbit(type));
  }
  for (const SlotLoad& load : cache->cache_->take_initial_loads()) {
    MOENAV_RETURN_IF_ERROR(cache->load(load));
  }
  return cache;
}

Status DeviceExpertCache::pin_experts() {
  // Whole pages, merged where tensors share or touch them (a page may be registered only once).
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
  for (const LayerWeights& layer : model_.weights.layers) {
    for (const FfnWeights& expert : layer.experts) {
      for (const TensorView* tensor : {&expert.gate, &expert.up, &expert.down}) {
        const auto begin = reinterpret_cast<uintptr_t>(tensor->data);
        const auto end = begin + static_cast<uintptr_t>(tensor->bytes());
        ranges.emplace_back(begin / page * page, (end + page - 1) / page * page);
      }
    }
  }
  std::sort(ranges.begin(), ranges.end());
  std::vector<std::pair<uintptr_t, uintptr_t>> merged;
  for (const auto& range : ranges) {
    if (!merged.empty() && range.first <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, range.second);
    } else {
      merged.push_back(range);
    }
  }
  for (const auto& [begin, end] : merged) {
    MOENAV_RETURN_IF_ERROR(context_.pin_host(reinterpret_cast<const void*>(begin),
                                             static_cast<int64_t>(end - begin)));
  }
  return ok_status();
}

Status DeviceExpertCache::measure_rates(ThreadPool& pool) {
  const ModelConfig& c = model_.config;
  const std::vector<int64_t>& key_bytes = cache_->settings().key_bytes;
  const auto largest = static_cast<int32_t>(
      std::max_element(key_bytes.begin(), key_bytes.end()) - key_bytes.begin());
  const FfnWeights& expert = model_.weights.layers[static_cast<size_t>(largest / c.n_experts)]
                                 .experts[static_cast<size_t>(largest % c.n_experts)];
  const auto bytes = static_cast<double>(key_bytes[static_cast<size_t>(largest)]);
  auto best_of_three = [](auto&& work) -> Expected<double> {
    double best = 1e30;
    for (int i = 0; i < 3; ++i) {
      const auto start = std::chrono::steady_clock::now();
      MOENAV_RETURN_IF_ERROR(work());
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    return best;
  };
  MOENAV_RETURN_IF_ERROR(context_.synchronize());
  MOENAV_ASSIGN_OR_RETURN(const double copy_seconds, best_of_three([&]() -> Status {
    MOENAV_ASSIGN_OR_RETURN(cuda::DeviceFfn unused, copy_in(largest, staging_, 0, staging_sync()));
    (void)unused;
    return context_.synchronize();
  }));
  host_to_device_bytes_ = 0;
  std::vector<float> input(static_cast<size_t>(c.hidden), 0.01f), output(static_cast<size_t>(c.hidden));
  Workspace work;
  work.ffn_gate.resize(static_cast<size_t>(expert.gate.rows()));
  work.ffn_up.resize(static_cast<size_t>(expert.up.rows()));
  MOENAV_ASSIGN_OR_RETURN(const double cpu_seconds, best_of_three([&]() -> Status {
    ffn_forward(expert, input.data(), 1, output.data(), work, pool);
    return ok_status();
  }));
  fetch_rate_ = bytes / std::max(copy_seconds, 1e-9);
  cpu_rate_ = bytes / std::max(cpu_seconds, 1e-9);
  return ok_status();
}

void DeviceExpertCache::split_misses(int64_t layer, std::span<const int32_t> experts,
                                     int64_t n_tokens) {
  misses_.assign(experts.size(), MissPolicy::Fetch);
  double fetch_busy = 0.0, cpu_busy = 0.0;  // seconds of this step's work given to each
  for (size_t i = 0; i < experts.size(); ++i) {
    if (cache_->resident(layer, experts[i])) continue;
    const int64_t key = layer * model_.config.n_experts + experts[i];
    const auto bytes = static_cast<double>(cache_->settings().key_bytes[static_cast<size_t>(key)]);
    const double fetch = bytes / fetch_rate_;
    const double cpu = bytes / cpu_rate_ * static_cast<double>(n_tokens);  // a matvec per row, at worst
    if (cpu_busy + cpu < fetch_busy + fetch) {
      misses_[i] = MissPolicy::Cpu;
      cpu_busy += cpu;
    } else {
      fetch_busy += fetch;
    }
  }
}

Expected<cuda::DeviceFfn> DeviceExpertCache::copy_in(int32_t key, const cuda::DeviceBuffer& buffer,
                                                     int64_t offset, int32_t sync) {
  const int64_t n_experts = model_.config.n_experts;
  const FfnWeights& expert = model_.weights.layers[static_cast<size_t>(key / n_experts)]
                                 .experts[static_cast<size_t>(key % n_experts)];
  // Not before the kernels of the slot's previous use are done with it.
  if (pinned_) MOENAV_RETURN_IF_ERROR(context_.wait(cuda::Stream::Copy, sync_[static_cast<size_t>(sync)].freed));
  cuda::DeviceFfn weights;
  auto place = [&](const TensorView& tensor, cuda::DeviceWeight& out) -> Status {
    MOENAV_RETURN_IF_ERROR(
        pinned_ ? context_.upload_pinned(buffer, tensor.data, tensor.bytes(), offset, cuda::Stream::Copy)
                : context_.upload(buffer, tensor.data, tensor.bytes(), offset));
    out = {tensor.dtype, tensor.rows(), tensor.cols(), static_cast<uint8_t*>(buffer.data()) + offset};
    offset += aligned(tensor.bytes());
    host_to_device_bytes_ += tensor.bytes();
    return ok_status();
  };
  MOENAV_RETURN_IF_ERROR(place(expert.gate, weights.gate));
  MOENAV_RETURN_IF_ERROR(place(expert.up, weights.up));
  MOENAV_RETURN_IF_ERROR(place(expert.down, weights.down));
  if (pinned_) MOENAV_RETURN_IF_ERROR(context_.record(sync_[static_cast<size_t>(sync)].loaded, cuda::Stream::Copy));
  return weights;
}

Status DeviceExpertCache::await_loaded(int32_t sync) {
  if (!pinned_) return ok_status();  // synchronous copies on the compute stream
  return context_.wait(cuda::Stream::Compute, sync_[static_cast<size_t>(sync)].loaded);
}

Status DeviceExpertCache::mark_freed(int32_t sync) {
  if (!pinned_) return ok_status();
  return context_.record(sync_[static_cast<size_t>(sync)].freed, cuda::Stream::Compute);
}

Status DeviceExpertCache::load(const SlotLoad& load) {
  MOENAV_ASSIGN_OR_RETURN(slot_weights_[static_cast<size_t>(load.slot)],
                          copy_in(load.key, slots_, load.slot * slot_bytes_, load.slot));
  return ok_status();
}

Status DeviceExpertCache::begin_layer(int64_t layer, std::span<const int32_t> experts,
                                      std::span<const uint8_t> top1, int64_t n_tokens,
                                      std::span<const int32_t> routed, int64_t k,
                                      const float* host_rows) {
  loads_.clear();
  if (auto_split_ && n_tokens <= kAutoSplitTokens) {
    split_misses(layer, experts, n_tokens);
    cache_->begin_layer(layer, experts, top1, loads_, misses_);
  } else {
    cache_->begin_layer(layer, experts, top1, loads_);
  }
  for (const SlotLoad& load : loads_) MOENAV_RETURN_IF_ERROR(this->load(load));
  if (!prefetcher_) return ok_status();
  // Queued after this layer's demand loads on the copy stream: they overlap its kernels.
  const ModelConfig& config = model_.config;
  auto speculate = [&](int distance, std::vector<int32_t>& predictions) -> int64_t {
    const int64_t target = moe_layer_ahead(config, layer, distance);
    if (target < 0 || host_rows == nullptr) return -1;
    speculate_experts(config, model_.weights.layers[static_cast<size_t>(target)], host_rows,
                      n_tokens, k, pool_, predictions);
    return target;
  };
  prefetcher_->after_routing(layer, n_tokens, k, routed, speculate, requests_);
  for (const PrefetchRequest& request : requests_) {
    loads_.clear();
    cache_->prefetch(request.layer, request.candidates, loads_);
    for (const SlotLoad& load : loads_) MOENAV_RETURN_IF_ERROR(this->load(load));
  }
  return ok_status();
}

Expected<DeviceExpertCache::Lease> DeviceExpertCache::acquire(int64_t layer, int32_t expert) {
  std::optional<SlotLoad> load;
  const ExpertDecision decision = cache_->acquire(layer, expert, load);
  if (load) MOENAV_RETURN_IF_ERROR(this->load(*load));
  Lease lease;
  int32_t& leased = leased_[static_cast<size_t>(expert)];
  switch (decision.source) {
    case ExpertSource::Slot:
      lease.weights = slot_weights_[static_cast<size_t>(decision.slot)];
      leased = decision.slot;
      MOENAV_RETURN_IF_ERROR(await_loaded(leased));
      return lease;
    case ExpertSource::Staging: {
      const auto key = static_cast<int32_t>(layer * model_.config.n_experts + expert);
      MOENAV_ASSIGN_OR_RETURN(lease.weights, copy_in(key, staging_, 0, staging_sync()));
      leased = staging_sync();
      MOENAV_RETURN_IF_ERROR(await_loaded(leased));
      return lease;
    }
    case ExpertSource::Skip:
      lease.skipped = true;
      return lease;
    case ExpertSource::Cpu:
      lease.host = &model_.weights.layers[static_cast<size_t>(layer)].experts[static_cast<size_t>(expert)];
      return lease;
    case ExpertSource::LowBit:  // resident for the whole run: nothing to wait for or free
      lease.weights = lowbit_weights_[static_cast<size_t>(layer * model_.config.n_experts + expert)];
      return lease;
  }
  return Status::errorf("layer {} expert {}: unknown expert source", layer, expert);
}

Status DeviceExpertCache::release(int64_t layer, int32_t expert) {
  cache_->release(layer, expert);
  int32_t& leased = leased_[static_cast<size_t>(expert)];
  if (leased < 0) return ok_status();
  const Status status = mark_freed(leased);  // after the kernels queued for this use
  leased = -1;
  return status;
}

void DeviceExpertCache::end_layer(int64_t layer) { cache_->end_layer(layer); }

ExpertCounters DeviceExpertCache::counters() const {
  ExpertCounters counters = cache_->counters();
  counters.host_to_device_bytes = host_to_device_bytes_;
  return counters;
}

void DeviceExpertCache::reset_counters() {
  cache_->reset_counters();
  host_to_device_bytes_ = 0;
}

}  // namespace moenav
