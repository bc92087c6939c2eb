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
  int64_t total = 0;  // slots in all
  if (cache_size == "auto") {
    if (in.budget_bytes <= 0) return plan;  // no budget: everything goes on the device
    // Besides the slots: the other weights, the low-precision copies, the reserve and the staging slot.
    const int64_t fixed = in.resident_bytes + in.miss_bytes + in.reserve_bytes + in.slot_bytes;
    if (in.budget_bytes < fixed) {
      return Status::errorf(
          "placement.expert_cache.size 'auto': the GPU budget {} is less than the {} needed besides "
          "the expert slots ({} of other weights{}, {} for activations and the KV cache, a staging "
          "slot of {}); raise --gpu-memory", format_bytes(in.budget_bytes), format_bytes(fixed),
          format_bytes(in.resident_bytes),
          in.miss_bytes > 0 ? fmt::format(", {} for the miss policy", format_bytes(in.miss_bytes)) : "",
          format_bytes(in.reserve_bytes), format_bytes(in.slot_bytes));
    }
    total = (in.budget_bytes - fixed) / in.slot_bytes;
  } else if (is_count(cache_size)) {
    const char* end = cache_size.data() + cache_size.size();
    int64_t per_layer = 0;
    if (std::from_chars(cache_size.data(), end, per_layer).ec != std::errc() ||
        per_layer > (int64_t{1} << 40) / in.n_moe_layers) {
      return Status::errorf("placement.expert_cache.size '{}': not a slot count this size", cache_size);
    }
    total = per_layer * in.n_moe_layers;
  } else {
    auto bytes = parse_byte_size(cache_size);
    if (!bytes.ok()) {
      return Status::errorf("placement.expert_cache.size '{}' is not all, auto, a slot count or a "
                            "byte size: {}", cache_size, bytes.status().message());
    }
    total = *bytes / in.slot_bytes;
  }
  const int64_t per_layer = total / in.n_moe_layers;
  if (per_layer >= in.n_experts) return plan;
  // 0 slots: no expert stays on the device; each use goes the miss policy's way (computed on the
  // CPU, or fetched through the staging slot).
  plan.cached = true;
  plan.slots_per_layer = per_layer;
  plan.slots = total;
  return plan;
}

// The largest bytes(expert) over the model's experts.
template <typename Bytes>
int64_t largest_expert(const Model& model, Bytes&& bytes) {
  int64_t largest = 0;
  for (const LayerWeights& layer : model.weights.layers) {
    for (const FfnWeights& expert : layer.experts) largest = std::max(largest, bytes(expert));
  }
  return largest;
}

int64_t device_slot_bytes(const Model& model) {
  return largest_expert(model, [](const FfnWeights& e) {
    return aligned(e.gate.bytes()) + aligned(e.up.bytes()) + aligned(e.down.bytes());
  });
}

// The largest expert down projection, 256-byte aligned: one split down slot.
int64_t split_slot_bytes(const Model& model) {
  return largest_expert(model, [](const FfnWeights& e) { return aligned(e.down.bytes()); });
}

std::vector<MissService> choose_miss_service(std::span<const MissCost> misses, int max_splits) {
  std::vector<MissService> services;
  double fetch_busy = 0.0, cpu_busy = 0.0;  // seconds of the step's work each has so far
  int splits = 0;
  for (const MissCost& miss : misses) {
    struct Option {
      MissService service;
      double fetch, cpu;
    };
    const Option options[] = {
        {MissService::Fetch, fetch_busy + miss.fetch_seconds, cpu_busy},
        {MissService::Cpu, fetch_busy, cpu_busy + miss.cpu_seconds},
        {MissService::Split, fetch_busy + (1.0 - miss.gate_up_share) * miss.fetch_seconds,
         cpu_busy + miss.gate_up_share * miss.cpu_seconds}};
    const Option* best = &options[0];
    for (const Option& option : options) {
      if (option.service == MissService::Split && splits >= max_splits) continue;
      if (std::max(option.fetch, option.cpu) < std::max(best->fetch, best->cpu)) best = &option;
    }
    services.push_back(best->service);
    fetch_busy = best->fetch, cpu_busy = best->cpu;
    if (best->service == MissService::Split) ++splits;
  }
  return services;
}

Expected<int64_t> device_miss_bytes(const Model& model, const EngineConfig& config) {
  if (config.miss.policy == "split" || config.miss.policy == "auto") {
    return DeviceExpertCache::kSplitSlots * split_slot_bytes(model);
  }
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
  cache->split_policy_ = config.miss.policy == "split";
  CacheSettings settings;
  settings.keys = expert_key_space(c, config);
  settings.policy = config.placement.expert_cache.policy;
  settings.global_scope = scope == "global";
  settings.slots_per_partition = settings.global_scope ? plan.slots : plan.slots_per_layer;
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
  if (miss == MissPolicy::Fetch) {  // (auto included) the other policies never copy a miss in
    MOENAV_ASSIGN_OR_RETURN(cache->staging_, context.allocate(plan.slot_bytes, "the expert staging slot"));
  }
  if (cache->auto_split_ || cache->split_policy_) {
    cache->split_slot_bytes_ = split_slot_bytes(model);
    MOENAV_ASSIGN_OR_RETURN(cache->split_downs_, context.allocate(kSplitSlots * cache->split_slot_bytes_,
                                                                  "the down projections of split misses"));
  }
  cache->slot_weights_.resize(static_cast<size_t>(slots));
  cache->leased_.assign(static_cast<size_t>(c.n_experts), -1);
  cache->split_slot_.assign(static_cast<size_t>(c.n_experts), -1);
  cache->split_downs_weights_.resize(kSplitSlots);
  cache->pinned_ = cache->pin_experts().ok();  // else every miss is a synchronous copy
  if (cache->pinned_) {
    cache->sync_.resize(static_cast<size_t>(slots + 1 + kSplitSlots));
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

void DeviceExpertCache::plan_misses(int64_t layer, std::span<const int32_t> experts,
                                    int64_t n_tokens) {
  misses_.assign(experts.size(), MissPolicy::Cpu);
  std::vector<size_t> missed;  // indices into experts
  std::vector<MissCost> costs;
  for (size_t i = 0; i < experts.size(); ++i) {
    if (cache_->resident(layer, experts[i])) continue;
    const FfnWeights& expert =
        model_.weights.layers[static_cast<size_t>(layer)].experts[static_cast<size_t>(experts[i])];
    const auto gate_up = static_cast<double>(expert.gate.bytes() + expert.up.bytes());
    const double bytes = gate_up + static_cast<double>(expert.down.bytes());
    // A matvec per row on the CPU, at worst.
    costs.push_back(
        {bytes / fetch_rate_, bytes / cpu_rate_ * static_cast<double>(n_tokens), gate_up / bytes});
    missed.push_back(i);
  }
  std::vector<MissService> services;
  if (auto_split_) {
    services = choose_miss_service(costs, kSplitSlots);
  } else {  // split: the first kSplitSlots, the rest wholly on the CPU
    for (size_t m = 0; m < missed.size(); ++m) {
      services.push_back(m < kSplitSlots ? MissService::Split : MissService::Cpu);
    }
  }
  int32_t splits = 0;
  for (size_t m = 0; m < missed.size(); ++m) {
    const size_t i = missed[m];
    misses_[i] = services[m] == MissService::Fetch ? MissPolicy::Fetch : MissPolicy::Cpu;
    if (services[m] == MissService::Split) split_slot_[static_cast<size_t>(experts[i])] = splits++;
  }
}

Status DeviceExpertCache::load_split_down(int64_t layer, int32_t expert) {
  const int32_t slot = split_slot_[static_cast<size_t>(expert)];
  const TensorView& down =
      model_.weights.layers[static_cast<size_t>(layer)].experts[static_cast<size_t>(expert)].down;
  const int32_t sync = split_sync(slot);
  if (pinned_) MOENAV_RETURN_IF_ERROR(context_.wait(cuda::Stream::Copy, sync_[static_cast<size_t>(sync)].freed));
  MOENAV_RETURN_IF_ERROR(copy_tensor(down, split_downs_, slot * split_slot_bytes_,
                                     split_downs_weights_[static_cast<size_t>(slot)]));
  if (pinned_) MOENAV_RETURN_IF_ERROR(context_.record(sync_[static_cast<size_t>(sync)].loaded, cuda::Stream::Copy));
  ++miss_split_;
  return ok_status();
}

Status DeviceExpertCache::copy_tensor(const TensorView& tensor, const cuda::DeviceBuffer& buffer,
                                      int64_t offset, cuda::DeviceWeight& out) {
  MOENAV_RETURN_IF_ERROR(
      pinned_ ? context_.upload_pinned(buffer, tensor.data, tensor.bytes(), offset, cuda::Stream::Copy)
              : context_.upload(buffer, tensor.data, tensor.bytes(), offset));
  out = {tensor.dtype, tensor.rows(), tensor.cols(), static_cast<uint8_t*>(buffer.data()) + offset};
  host_to_device_bytes_ += tensor.bytes();
  return ok_status();
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
    MOENAV_RETURN_IF_ERROR(copy_tensor(tensor, buffer, offset, out));
    offset += aligned(tensor.bytes());
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
  std::fill(split_slot_.begin(), split_slot_.end(), -1);
  if ((auto_split_ && n_tokens <= kAutoSplitTokens) || split_policy_) {
    plan_misses(layer, experts, n_tokens);
    cache_->begin_layer(layer, experts, top1, loads_, misses_);
  } else {
    cache_->begin_layer(layer, experts, top1, loads_);
  }
  // On the copy stream in order of need: demand loads, split misses' down projections (while the
  // CPU computes their gate and up), then prefetches for later layers.
  for (const SlotLoad& load : loads_) MOENAV_RETURN_IF_ERROR(this->load(load));
  for (int32_t expert : experts) {
    if (split_slot_[static_cast<size_t>(expert)] >= 0) MOENAV_RETURN_IF_ERROR(load_split_down(layer, expert));
  }
  if (!prefetcher_) return ok_status();
  // Queued after this layer's loads on the copy stream: they overlap its kernels.
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
    case ExpertSource::Cpu: {
      lease.host = &model_.weights.layers[static_cast<size_t>(layer)].experts[static_cast<size_t>(expert)];
      const int32_t slot = split_slot_[static_cast<size_t>(expert)];
      if (slot >= 0) {  // its down projection was queued at begin_layer
        lease.down = split_downs_weights_[static_cast<size_t>(slot)];
        leased = split_sync(slot);
      }
      return lease;
    }
    case ExpertSource::LowBit:  // resident for the whole run: nothing to wait for or free
      lease.weights = lowbit_weights_[static_cast<size_t>(layer * model_.config.n_experts + expert)];
      return lease;
  }
  return Status::errorf("layer {} expert {}: unknown expert source", layer, expert);
}

Status DeviceExpertCache::await_down(int32_t expert) {
  const int32_t leased = leased_[static_cast<size_t>(expert)];
  if (leased < 0) return Status::errorf("expert {}: no down projection was fetched for it", expert);
  return await_loaded(leased);
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
  counters.miss_split = miss_split_;
  return counters;
}

void DeviceExpertCache::reset_counters() {
  cache_->reset_counters();
  host_to_device_bytes_ = 0;
  miss_split_ = 0;
}

}  // namespace moenav
