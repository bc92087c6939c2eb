#include "experts/memory_planner.h"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

#include "core/byte_size.h"
#include "model/model.h"

namespace moenav {
namespace {

int64_t moe_layer_count(const ModelConfig& config) {
  int64_t count = 0;
  for (int64_t l = 0; l < config.n_layers; ++l) count += config.is_moe_layer(l) ? 1 : 0;
  return count;
}

// The routed experts' matrices (the bytes a cache slot holds).
int64_t expert_matrix_bytes(const Model& model) {
  int64_t total = 0;
  for (const LayerWeights& layer : model.weights.layers) {
    for (const FfnWeights& expert : layer.experts) {
      total += expert.gate.bytes() + expert.up.bytes() + expert.down.bytes();
    }
  }
  return total;
}

// Forward-pass buffers for one ubatch (engine.cpp's resize_workspace) and its logits.
int64_t workspace_bytes(const ModelConfig& c, const EngineConfig& config, int64_t context, int threads) {
  const int64_t rows = std::max(config.batch.ubatch, 1) * std::max(config.batch.max_sequences, 1);
  const int64_t ffn = std::max({c.expert_ffn, c.dense_ffn, c.shared_expert_ffn});
  const int64_t k = std::max<int64_t>({c.n_experts_used, config.routing.top_k, 1});
  const int64_t per_row = 7 * c.hidden + 2 * c.q_dim() + 2 * c.kv_dim() + 2 * ffn + c.n_experts +
                          k * c.hidden + c.vocab;
  return 4 * (rows * per_row + threads * context);
}

bool all_digits(const std::string& text) {
  return !text.empty() && std::all_of(text.begin(), text.end(),
                                      [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); });
}

Status over_budget(const MemoryPlan& plan, const std::string& what, const std::string& advice) {
  return Status::errorf("{} = {} cannot hold {}: {}\n{}", plan.budget_option, format_bytes(plan.budget),
                        what, advice, plan.to_string());
}

}  // namespace

int64_t MemoryPlan::fixed_bytes() const {
  int64_t total = 0;
  for (const MemoryItem& item : fixed) total += item.bytes;
  return total;
}

std::string MemoryPlan::to_string() const {
  std::string out = "memory plan";
  out += budget > 0 ? fmt::format(" ({} = {})\n", budget_option, format_bytes(budget)) : " (no budget)\n";
  for (const MemoryItem& item : fixed) out += fmt::format("  {:<28} {:>12}\n", item.name, format_bytes(item.bytes));
  out += fmt::format("  {:<28} {:>12}\n", "fixed part", format_bytes(fixed_bytes()));
  if (cached) {
    const std::string layout = scope == "layer" ? fmt::format("{} per MoE layer", slots_per_layer)
                                                : std::string("one pool");
    out += fmt::format("  {:<28} {:>12}  ({} slots of {}, {}; all experts {})\n", "expert cache",
                       format_bytes(cache_bytes()), slots, format_bytes(slot_bytes), layout,
                       format_bytes(expert_bytes));
  } else {
    out += fmt::format("  {:<28} {:>12}  (all resident)\n", "routed experts", format_bytes(expert_bytes));
  }
  out += fmt::format("  {:<28} {:>12}", "total", format_bytes(total_bytes()));
  if (budget > 0) out += fmt::format("  ({} free)", format_bytes(budget - total_bytes()));
  return out;
}

nlohmann::json MemoryPlan::to_json() const {
  nlohmann::json items = nlohmann::json::object();
  for (const MemoryItem& item : fixed) items[item.name] = item.bytes;
  return {{"budget_bytes", budget},   {"fixed", items},           {"fixed_bytes", fixed_bytes()},
          {"cached", cached},         {"slot_bytes", slot_bytes}, {"slots", slots},
          {"slots_per_layer", slots_per_layer}, {"scope", scope}, {"cache_bytes", cache_bytes()},
          {"expert_bytes", expert_bytes}, {"total_bytes", total_bytes()}};
}

Expected<MemoryPlan> plan_memory(const Model& model, const EngineConfig& config, const PlanInputs& inputs) {
  const ModelConfig& c = model.config;
  MemoryPlan plan;
  plan.budget_option = config.device.backend == "cuda" ? "device.gpu_memory" : "device.host_memory";
  const std::string& budget_text = config.device.backend == "cuda" ? config.device.gpu_memory
                                                                   : config.device.host_memory;
  if (!budget_text.empty()) {
    MOENAV_ASSIGN_OR_RETURN(plan.budget, parse_byte_size(budget_text));
    if (plan.budget <= 0) return Status::errorf("{} = '{}' must be positive", plan.budget_option, budget_text);
  }
  plan.expert_bytes = expert_matrix_bytes(model);
  const int64_t kv = c.n_layers * inputs.context * c.kv_cache_width() * config.kv_cache.element_bytes() *
                     std::max(config.batch.max_sequences, 1);
  plan.fixed = {{"non-expert weights", std::max<int64_t>(model.total_bytes() - plan.expert_bytes, 0)},
                {"kv cache", kv},
                {"workspaces", workspace_bytes(c, config, inputs.context, inputs.threads)}};
  if (inputs.staging_bytes > 0) plan.fixed.push_back({"expert staging", inputs.staging_bytes});
  if (inputs.lowbit_bytes > 0) plan.fixed.push_back({"low-bit expert copies", inputs.lowbit_bytes});
  plan.scope = config.placement.expert_cache.scope;
  if (plan.scope != "layer" && plan.scope != "global") {
    return Status::errorf("placement.expert_cache.scope '{}' is not one of: layer, global", plan.scope);
  }
  if (plan.budget > 0 && plan.fixed_bytes() > plan.budget) {
    return over_budget(plan, "the fixed part", fmt::format("it needs {} before any expert; raise the "
                       "budget", format_bytes(plan.fixed_bytes())));
  }
  const std::string& size = config.placement.expert_cache.size;
  const int64_t moe_layers = moe_layer_count(c);
  if (size == "all" || moe_layers == 0) {
    if (plan.budget > 0 && plan.total_bytes() > plan.budget) {
      return over_budget(plan, "every expert resident",
                         "set placement.expert_cache.size (--cache-size) to \"auto\" or a slot count");
    }
    return plan;
  }
  plan.cached = true;
  plan.slot_bytes = inputs.slot_bytes > 0 ? inputs.slot_bytes : plan.expert_bytes / (moe_layers * c.n_experts);
  const int64_t all_slots = moe_layers * c.n_experts;
  int64_t slots = 0;
  if (size == "auto") {
    if (plan.budget == 0) {
      return Status::errorf("placement.expert_cache.size = \"auto\" needs a budget ({}); or give a "
                            "slot count or a byte size", plan.budget_option);
    }
    slots = std::min(all_slots, (plan.budget - plan.fixed_bytes()) / plan.slot_bytes);
  } else if (all_digits(size)) {
    const int64_t per_layer = std::stoll(size.substr(0, 12));
    if (per_layer < 1 || per_layer > c.n_experts) {
      return Status::errorf("placement.expert_cache.size = {} slots per MoE layer: must be between 1 "
                            "and the model's {} experts per layer", size, c.n_experts);
    }
    slots = per_layer * moe_layers;
  } else {
    auto bytes = parse_byte_size(size);
    if (!bytes.ok()) {
      return Status::errorf("placement.expert_cache.size '{}' is not \"all\", \"auto\", a slot count "
                            "or a byte size ({})", size, bytes.status().message());
    }
    slots = std::min(all_slots, *bytes / plan.slot_bytes);
  }
  const int64_t minimum = plan.scope == "layer" ? moe_layers : 1;
  if (slots < minimum) {
    plan.slots = slots;
    return Status::errorf("placement.expert_cache.size = '{}' leaves room for {} expert slots of {}; "
                          "the cache needs at least {} ({}){}\n{}", size, slots, format_bytes(plan.slot_bytes),
                          minimum, plan.scope == "layer" ? "one per MoE layer" : "one",
                          plan.budget > 0 ? fmt::format(" within {} = {}", plan.budget_option, format_bytes(plan.budget)) : "",
                          plan.to_string());
  }
  plan.slots_per_layer = std::min(c.n_experts, slots / moe_layers);
  plan.slots = plan.scope == "layer" ? plan.slots_per_layer * moe_layers : slots;
  if (plan.budget > 0 && plan.total_bytes() > plan.budget) {
    return over_budget(plan, fmt::format("an expert cache of {} slots ({})", plan.slots,
                                         format_bytes(plan.cache_bytes())),
                       fmt::format("the cache is larger than the budget; at most {} slots fit",
                                   (plan.budget - plan.fixed_bytes()) / plan.slot_bytes));
  }
  return plan;
}

}  // namespace moenav
