// The memory planner: lays out the fixed part of a run (non-expert weights, KV cache, workspaces,
// staging buffers, low-bit expert copies) first, then gives what the budget leaves to expert cache
// slots (shared/DESIGN.md §4). On the CPU-only build the budget is device.host_memory and the
// slots form the host-memory expert cache over the disk tier; the CUDA build applies the same
// plan to device.gpu_memory. A budget that cannot hold the fixed part plus one slot per MoE layer,
// or an explicit cache larger than the budget, is refused with the breakdown.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/byte_size.h"
#include "moenav/engine_config.h"
#include "moenav/status.h"

namespace moenav {

struct Model;

struct MemoryItem {
  std::string name;
  int64_t bytes = 0;
};

struct MemoryPlan {
  int64_t budget = 0;              // bytes; 0 = no limit
  std::string budget_option;       // the option that set it ("device.host_memory")
  std::vector<MemoryItem> fixed;   // laid out first
  int64_t expert_bytes = 0;        // all routed experts, as stored
  bool cached = false;             // false: every expert resident (no cache)
  int64_t slot_bytes = 0;          // one cache slot (an expert's bytes, I/O-aligned)
  int64_t slots = 0;               // all slots
  int64_t slots_per_layer = 0;     // scope "layer": slots of each MoE layer's partition
  std::string scope = "layer";     // "layer" (a partition per MoE layer) or "global" (one pool)

  int64_t fixed_bytes() const;
  int64_t cache_bytes() const { return cached ? slots * slot_bytes : expert_bytes; }
  int64_t total_bytes() const { return fixed_bytes() + cache_bytes(); }
  std::string to_string() const;  // the breakdown, one line per item
  nlohmann::json to_json() const;
};

// What the planner needs beyond the model and the config.
struct PlanInputs {
  int64_t context = 0;        // KV cache positions per sequence
  int threads = 1;            // attention scores workspace is per thread
  int64_t slot_bytes = 0;     // from the expert reader (alignment included); 0 = expert bytes
  int64_t lowbit_bytes = 0;   // low-bit copies of every expert (miss.policy = lowbit)
  int64_t staging_bytes = 0;  // transient expert buffers (misses that are not cached)
};

// Resolves placement.expert_cache.size ("all", "auto", slots per MoE layer, or bytes) against the
// budget. Errors: unknown size, slots outside [1, n_experts], a cache larger than the budget, a
// budget below the fixed part, "auto" without a budget.
Expected<MemoryPlan> plan_memory(const Model& model, const EngineConfig& config,
                                 const PlanInputs& inputs);

}  // namespace moenav
