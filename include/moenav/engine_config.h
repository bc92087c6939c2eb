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
};

struct DeviceConfig {
  std::string backend = "cpu";
  std::string gpu_memory;   // byte size such as "16GiB"; "" = no limit
  std::string host_memory;  // expert-cache budget on the CPU-only build; "" = no limit
  int threads = 0;          // 0 = all cores
};

struct PlacementRule {
  std::string match;  // "layers[0-13].experts"
  std::string tier;   // "device" | "host" | "disk"
};

struct ExpertCacheConfig {
  std::string size = "all";  // "all", "auto", a slot count per layer ("2"), or bytes ("2GiB")
  std::string policy = "lru";
  std::string warm_start;    // routing statistics file
};

struct PlacementConfig {
  std::vector<PlacementRule> rules;
  ExpertCacheConfig expert_cache;
};

struct PrefetchConfig {
  std::string policy = "none";
  int depth = 1;
};

struct MissConfig {
  std::string policy = "fetch";
};

struct RoutingConfig {
  int top_k = 0;                      // 0 = the model's own
  std::vector<int> per_layer_top_k;   // empty = global
  std::string skip_policy = "none";   // "none" | "threshold" | "adaptive"
  double skip_threshold = 0.0;
  std::string prune_policy = "none";  // "none" | "frequency" | "random" | ...
  double prune_fraction = 0.0;
};

struct KvCacheConfig {
  std::string type = "f32";
  int64_t context = 0;  // 0 = the model's context length
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

// "16GiB", "512MB", "1e9" -> bytes.
Expected<int64_t> parse_byte_size(std::string_view text);

}  // namespace moenav
