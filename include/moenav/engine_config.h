// EngineConfig: the one JSON document that describes how to run a model (shared/DESIGN.md §4).
// `tune` writes one, every other command reads one. Each field is declared once, in the option
// table of engine_config.cpp, which serves the config file, the command-line flags, the
// MOENAV_* environment variables and the server alike.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "moenav/status.h"

namespace moenav {

struct TypeRule {
  std::string match;  // substring or glob of a canonical tensor name ("exps", "attn_*")
  std::string type;   // dtype name ("q4_k", "f32")
};

struct WeightsConfig {
  std::string type;  // "" = as stored in the file
  std::vector<TypeRule> rules;
  // "copy": the matrices the CPU computes from are copied out of the file mapping into huge-page
  // host memory at load (faster to stream); "mmap": used in place from the mapping
  std::string load = "copy";
};

struct DeviceConfig {
  std::string backend = "cpu";
  std::string gpu_memory;   // byte size such as "16GiB"; "" = no limit
  std::string host_memory;  // expert-cache budget on the CPU-only build; "" = no limit
  int threads = 0;          // 0 = all cores
  // CUDA prefill GEMMs: "f32" (exact) or "bf16" (tensor cores; resident routed experts then run
  // as grouped GEMMs that dequantize in shared memory)
  std::string gemm_precision = "f32";
  bool cuda_graphs = true;  // CUDA decode steps routed on the device replay as recorded graphs
};

struct PlacementRule {
  std::string match;  // "layers[0-13].experts"
  std::string tier;   // "device" | "host" | "disk"
};

struct ExpertCacheConfig {
  std::string size = "all";  // "all", "auto", a slot count per layer ("2"), or bytes ("2GiB")
  std::string policy = "lru";  // "lru" | "lfu" | "lfru" | "static" | "priority"
  std::string warm_start;    // routing statistics file
  std::string scope = "layer";  // "layer": slots per MoE layer; "global": one pool for all layers
};

struct PlacementConfig {
  std::vector<PlacementRule> rules;
  ExpertCacheConfig expert_cache;
  std::string disk_io = "direct";  // how the disk tier reads: "direct" (O_DIRECT), "buffered", "mmap"
};

struct PrefetchConfig {
  std::string policy = "none";  // "none" | "next_layer_gate" | "trace"
  int depth = 1;
  int io_threads = 2;                   // asynchronous I/O workers (0 = synchronous loads)
  std::string max_in_flight = "32MiB";  // bound on bytes being read at once
};

struct MissConfig {
  std::string policy = "fetch";  // "fetch" | "cpu" | "lowbit" | "skip" | "auto"
  std::string lowbit_type = "q4_0";  // the low-precision copy's type (lowbit)
};

struct RoutingConfig {
  int top_k = 0;                      // 0 = the model's own
  std::vector<int> per_layer_top_k;   // empty = global
  std::string skip_policy = "none";   // "none" | "threshold" | "adaptive"
  double skip_threshold = 0.0;        // threshold: drop weights below; adaptive: keep this mass
  bool skip_renormalize = false;      // rescale the kept weights to the selection's sum
  std::string prune_policy = "none";  // "none" | "frequency" | "random" | "structured"
  double prune_fraction = 0.0;
  std::string prune_score = "hard";   // frequency: "hard" (selection counts) | "soft" (weight sums)
  std::string prune_calibration;      // frequency: routing statistics file (moenav trace --stats)
  std::string prune_pattern = "tail"; // structured: "odd" | "even" | "tail" (highest indices)
  int prune_seed = 0;                 // random
  std::string allocation_policy = "none";  // per-layer k: "none" | "lexi" (data-free)
  double allocation_average_k = 0.0;       // lexi: mean k over MoE layers (0 = the model's)
};

struct KvCacheConfig {
  std::string type = "f32";
  int64_t context = 0;  // 0 = the model's context length
  int64_t element_bytes() const { return type == "f16" ? 2 : 4; }
};

struct BatchConfig {
  int max_sequences = 1;
  int ubatch = 512;
};

struct EngineConfig {
  WeightsConfig weights;
  DeviceConfig device;
  PlacementConfig placement;
  PrefetchConfig prefetch;
  MissConfig miss;
  RoutingConfig routing;
  KvCacheConfig kv_cache;
  BatchConfig batch;
};

// One row of the option table.
struct ConfigOption {
  std::string_view path;  // JSON path, "routing.top_k"
  std::string_view flag;  // command-line flag, "--top-k"
  std::string_view help;
  std::function<Status(EngineConfig&, const nlohmann::json&)> set;
  std::function<nlohmann::json(const EngineConfig&)> get;
};

const std::vector<ConfigOption>& config_options();

// Reads a config document; unknown keys and wrong types are errors naming the key.
Expected<EngineConfig> config_from_json(const nlohmann::json& document);
Expected<EngineConfig> config_from_file(const std::string& path);
nlohmann::json config_to_json(const EngineConfig& config);
// Sets one option from text (a flag or an environment variable): JSON if it parses, else string.
Status set_option(EngineConfig& config, std::string_view path, const std::string& text);
// Applies MOENAV_<PATH> environment variables (routing.top_k -> MOENAV_ROUTING_TOP_K).
Status apply_environment(EngineConfig& config);
std::string environment_name(std::string_view path);

}  // namespace moenav
