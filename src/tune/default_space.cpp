#include "tune/default_space.h"

#include <algorithm>
#include <functional>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "model/model.h"
#include "tune/profiler.h"

namespace moenav::tune {
namespace {

using nlohmann::json;

Choice choice(std::string label, std::vector<Setting> settings) { return {std::move(label), std::move(settings)}; }

Dimension weights_dimension(SpacePreset preset) {
  Dimension dimension{"weights", {choice("as stored", {{"weights.type", ""}})}};
  std::vector<std::string> types = {"q8_0", "q4_k", "q4_0"};
  if (preset == SpacePreset::Small) types = {"q8_0"};
  if (preset == SpacePreset::Wide) types = {"q8_0", "q4_0"};
  for (const std::string& type : types) dimension.choices.push_back(choice(type, {{"weights.type", type}}));
  return dimension;
}

// Bits per weight of the model's experts as loaded (all its weights when it has no experts).
double loaded_bits_per_weight(const Model& model) {
  int64_t bytes = 0, weights = 0;
  auto add = [&](const TensorView& t) {
    if (t.empty()) return;
    bytes += t.bytes();
    weights += t.shape.elements();
  };
  for (const LayerWeights& layer : model.weights.layers) {
    for (const FfnWeights& expert : layer.experts) add(expert.gate), add(expert.up), add(expert.down);
  }
  return weights > 0 ? 8.0 * static_cast<double>(bytes) / static_cast<double>(weights) : 32.0;
}

double bits_per_weight(DType type) {
  const int64_t block = dtype_block_size(type);
  return 8.0 * static_cast<double>(dtype_bytes(type, block)) / static_cast<double>(block);
}

Dimension experts_dimension(const ModelConfig& model, SpacePreset preset) {
  const int64_t k = model.n_experts_used, experts = model.n_experts;
  std::set<int64_t> values;
  if (preset == SpacePreset::Small) values = {std::max<int64_t>(1, k / 2), k};
  else if (preset == SpacePreset::Default) values = {std::max<int64_t>(1, k / 2), std::max<int64_t>(1, k - 1), k, k + 1};
  else for (int64_t v = 1; v <= k + 1; ++v) values.insert(v);
  if (preset == SpacePreset::Default && k >= 4) values.insert(std::max<int64_t>(1, k / 4));
  Dimension dimension{"experts per token", {}};
  for (int64_t v : values) {
    if (v < 1 || v > experts) continue;
    // The model's own k is written as "model default" (top_k 0) so the base point stays the baseline.
    const json value = v == k ? json(0) : json(v);
    dimension.choices.push_back(choice(fmt::format("k={}", v), {{"routing.top_k", value}}));
  }
  return dimension;
}

Choice skip_choice(double threshold) {
  return choice(fmt::format("skip<{:g}", threshold),
                {{"routing.skip.policy", "threshold"}, {"routing.skip.threshold", threshold}});
}

Dimension skip_dimension() {
  return {"expert skipping",
          {choice("no skip", {{"routing.skip.policy", "none"}, {"routing.skip.threshold", 0.0}}), skip_choice(0.2)}};
}

Choice cache_choice(int64_t slots, int64_t experts, const std::string& policy) {
  return choice(fmt::format("cache {}/{} {}", slots, experts, policy),
                {{"placement.expert_cache.size", std::to_string(slots)}, {"placement.expert_cache.policy", policy}});
}

// Expert cache sizes as slots per layer (fractions of the experts) under LRU (and LFU); with a
// GPU budget also "auto", the device expert cache that fills what the budget leaves.
Dimension cache_dimension(const ModelConfig& model, SpacePreset preset, bool fit_budget) {
  const int64_t experts = model.n_experts;
  auto slots = [&](int quarters) { return std::max<int64_t>(1, experts * quarters / 4); };
  Dimension dimension{"expert cache", {choice("all resident", {{"placement.expert_cache.size", "all"}})}};
  if (fit_budget) {
    dimension.choices.push_back(choice("cache fits the GPU budget", {{"placement.expert_cache.size", "auto"},
                                                                     {"placement.expert_cache.policy", "lru"}}));
  }
  std::vector<int> quarters = {2};
  if (preset == SpacePreset::Default) quarters = {3, 2, 1};
  if (preset == SpacePreset::Wide) quarters = {2, 1};
  std::set<int64_t> seen;
  for (int q : quarters) {
    if (seen.insert(slots(q)).second && slots(q) < experts) dimension.choices.push_back(cache_choice(slots(q), experts, "lru"));
  }
  if (preset == SpacePreset::Default && slots(2) < experts) dimension.choices.push_back(cache_choice(slots(2), experts, "lfu"));
  return dimension;
}

Dimension threads_dimension(SpacePreset preset) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::set<int> values = {1, cores};
  if (preset == SpacePreset::Wide && cores >= 4) values.insert(cores / 2);
  Dimension dimension{"threads", {}};
  for (int v : values) {
    dimension.choices.push_back(choice(fmt::format("{} thread{}", v, v == 1 ? "" : "s"),
                                       {{"device.threads", v == cores ? 0 : v}}));
  }
  return dimension;
}

Dimension prefetch_dimension() {
  return {"prefetch", {choice("no prefetch", {{"prefetch.policy", "none"}}),
                       choice("prefetch next-layer gate", {{"prefetch.policy", "next_layer_gate"}})}};
}

// gpu: the GPU tier's policies too, a miss's gate/up on the CPU and its down fetched (split), and
// each decode step's misses shared between PCIe and the CPU by measured rates (auto).
Dimension miss_dimension(bool gpu) {
  Dimension dimension{"miss policy", {choice("miss: fetch", {{"miss.policy", "fetch"}}),
                                      choice("miss: run on CPU", {{"miss.policy", "cpu"}})}};
  if (gpu) {
    dimension.choices.push_back(choice("miss: split", {{"miss.policy", "split"}}));
    dimension.choices.push_back(choice("miss: auto", {{"miss.policy", "auto"}}));
  }
  return dimension;
}

// The KV cache element type (GQA attention): f16 halves the cache and what each
// decode step reads of it, at a small change of the numbers (so perplexity is measured for it).
Dimension kv_cache_dimension() {
  return {"KV cache", {choice("kv f32", {{"kv_cache.type", "f32"}}), choice("kv f16", {{"kv_cache.type", "f16"}})}};
}

Dimension* find_dimension(ConfigSpace& space, const std::string& name) {
  for (Dimension& dimension : space.dimensions) {
    if (dimension.name == name) return &dimension;
  }
  return nullptr;
}

// The validation space must have >= 100 points yet stay measurable exhaustively: dimensions and
// values are added in this order until it does.
void grow_wide(ConfigSpace& space, const ModelConfig& model, bool has_cache) {
  std::vector<std::function<void()>> steps = {
      [&] { space.dimensions.push_back({"ubatch", {choice("ubatch 64", {{"batch.ubatch", 64}}), choice("ubatch 512", {{"batch.ubatch", 512}})}}); },
      [&] { if (Dimension* d = find_dimension(space, "expert skipping")) d->choices.push_back(skip_choice(0.3)); },
      [&] {
        Dimension* d = find_dimension(space, "experts per token");
        const int64_t k = model.n_experts_used + 2;
        if (d && k <= model.n_experts) d->choices.push_back(choice(fmt::format("k={}", k), {{"routing.top_k", k}}));
      },
      [&] { if (has_cache) space.dimensions.push_back(prefetch_dimension()); },
  };
  for (auto& step : steps) {
    if (space.size() >= 100) break;
    step();
  }
}

}  // namespace

Expected<SpacePreset> space_preset_from_name(const std::string& name) {
  if (name == "small") return SpacePreset::Small;
  if (name == "default") return SpacePreset::Default;
  if (name == "wide") return SpacePreset::Wide;
  return Status::errorf("--space '{}': choose small, default or wide", name);
}

Status probe_expert_cache(const std::string& model_path, const EngineConfig& base) {
  EngineConfig probe = base;
  probe.placement.expert_cache.size = "1";
  probe.device.host_memory = "1B";
  auto engine = Engine::create(model_path, probe);
  if (engine.ok()) {
    return Status::error("expert caching is not in this build yet: the engine accepted a 1-byte host "
                         "expert-cache budget, so cache size, cache policy, prefetch and miss policy are "
                         "left out of the space");
  }
  return ok_status();
}

Expected<ConfigSpace> default_space(const std::string& model_path, const Engine& base_engine, const EngineConfig& base,
                                    SpacePreset preset, const std::vector<std::string>& dimensions) {
  const ModelConfig& model = base_engine.model_config();
  ConfigSpace space;
  space.base = base;
  // Weight types: each is loaded once to see whether the build converts weights at load. A type
  // of no fewer bits per weight than the experts have is left out unloaded: requantizing cannot
  // restore what the stored type lost, so it would cost memory (and a long conversion of a big
  // model) for no quality.
  Dimension weights = weights_dimension(preset);
  std::vector<Choice> kept;
  const double loaded_bits = loaded_bits_per_weight(base_engine.model());
  for (Choice& candidate : weights.choices) {
    EngineConfig config = base;
    config.weights.type = candidate.settings[0].value.get<std::string>();
    if (config.weights.type.empty()) {
      kept.push_back(std::move(candidate));
      continue;
    }
    const auto type = dtype_from_name(config.weights.type);
    if (type && bits_per_weight(*type) >= loaded_bits - 1e-9) {
      space.notes.push_back(fmt::format("weights {}: left out ({:.2f} bits per weight, the experts have {:.2f})",
                                        candidate.label, bits_per_weight(*type), loaded_bits));
      continue;
    }
    auto engine = Engine::create(model_path, config);
    Status status = engine.ok() ? Profiler::check_effective(**engine, config) : engine.status();
    if (status.ok()) kept.push_back(std::move(candidate));
    else space.notes.push_back(fmt::format("weights {}: unavailable ({})", candidate.label, status.message()));
  }
  weights.choices = std::move(kept);
  if (weights.choices.size() > 1) space.dimensions.push_back(std::move(weights));
  bool has_cache = false;
  if (model.n_experts > 1) {
    space.dimensions.push_back(experts_dimension(model, preset));
    if (preset != SpacePreset::Small) space.dimensions.push_back(skip_dimension());
    if (base.device.backend == "cuda") {
      // The device expert cache: its sizes, prefetching on the copy stream and the miss policies.
      has_cache = true;
      space.dimensions.push_back(cache_dimension(model, preset, !base.device.gpu_memory.empty()));
      // No expert on the device: with misses on the CPU, llama.cpp's --cpu-moe.
      space.dimensions.back().choices.push_back(choice("no expert slots", {{"placement.expert_cache.size", "0"}}));
      if (preset == SpacePreset::Default) {
        space.dimensions.push_back(prefetch_dimension());
        space.dimensions.push_back(miss_dimension(true));
        space.dimensions.push_back({"prefill GEMM", {choice("gemm f32", {{"device.gemm_precision", "f32"}}),
                                                     choice("gemm bf16", {{"device.gemm_precision", "bf16"}})}});
      }
    } else if (Status cache = probe_expert_cache(model_path, base); cache.ok()) {
      has_cache = true;
      space.dimensions.push_back(cache_dimension(model, preset, false));
      if (preset == SpacePreset::Default) {
        space.dimensions.push_back(prefetch_dimension());
        space.dimensions.push_back(miss_dimension(false));
      }
    } else {
      space.notes.push_back(cache.message());
    }
  }
  if (preset == SpacePreset::Default && model.attention == AttentionKind::Gqa) {
    space.dimensions.push_back(kv_cache_dimension());
  }
  if (std::thread::hardware_concurrency() > 1) space.dimensions.push_back(threads_dimension(preset));
  for (const std::string& text : dimensions) MOENAV_RETURN_IF_ERROR(space.add_dimension_text(text));
  if (preset == SpacePreset::Wide) grow_wide(space, model, has_cache);
  for (const std::string& message : space.validate()) space.notes.push_back(message);
  return space;
}

}  // namespace moenav::tune
