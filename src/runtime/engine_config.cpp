// The option table: every EngineConfig field, declared once with its JSON path, flag, help and
// validation. Config files, flags, environment variables and server requests all go through it.
#include "moenav/engine_config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>

#include <fmt/format.h>

#include "core/byte_size.h"

namespace moenav {

using nlohmann::json;

// Serializers found by nlohmann::json through argument-dependent lookup.
void to_json(json& out, const TypeRule& rule) { out = {{"match", rule.match}, {"type", rule.type}}; }
void to_json(json& out, const PlacementRule& rule) {
  out = {{"match", rule.match}, {"tier", rule.tier}};
}

namespace {

template <typename T>
bool holds(const json& value) {
  if constexpr (std::is_same_v<T, bool>) return value.is_boolean();
  else if constexpr (std::is_integral_v<T>) return value.is_number_integer();
  else if constexpr (std::is_floating_point_v<T>) return value.is_number();
  else if constexpr (std::is_same_v<T, std::string>) return value.is_string();
  else if constexpr (std::is_same_v<T, std::vector<int>>) {
    if (!value.is_array()) return false;
    for (const json& item : value) if (!item.is_number_integer()) return false;
    return true;
  } else {
    return value.is_array();
  }
}

template <typename T>
std::string_view type_word() {
  if constexpr (std::is_same_v<T, bool>) return "true or false";
  else if constexpr (std::is_integral_v<T>) return "an integer";
  else if constexpr (std::is_floating_point_v<T>) return "a number";
  else if constexpr (std::is_same_v<T, std::string>) return "a string";
  else if constexpr (std::is_same_v<T, std::vector<int>>) return "an array of integers";
  else return "an array of {\"match\": ..., ...} objects";
}

// Rules arrays: each element an object with two string fields.
template <typename Rule>
Status parse_rules(std::string_view path, const json& value, const char* second,
                   std::vector<Rule>& out) {
  out.clear();
  for (const json& item : value) {
    if (!item.is_object() || !item.contains("match") || !item["match"].is_string() ||
        !item.contains(second) || !item[second].is_string()) {
      return Status::errorf("option '{}': each rule must be {{\"match\": STRING, \"{}\": STRING}}, "
                            "found {}", path, second, item.dump());
    }
    Rule rule;
    rule.match = item["match"].get<std::string>();
    if constexpr (std::is_same_v<Rule, TypeRule>) rule.type = item["type"].get<std::string>();
    else rule.tier = item["tier"].get<std::string>();
    out.push_back(rule);
  }
  return ok_status();
}

using Validator = std::function<Status(std::string_view path, const json& value)>;

template <typename T, typename Ref>
ConfigOption option(std::string_view path, std::string_view flag, std::string_view help, Ref ref,
                    Validator validate = {}) {
  ConfigOption row;
  row.path = path;
  row.flag = flag;
  row.help = help;
  row.set = [=](EngineConfig& config, const json& value) -> Status {
    if (!holds<T>(value)) {
      return Status::errorf("option '{}' must be {}, found {}", path, type_word<T>(), value.dump());
    }
    if (validate) MOENAV_RETURN_IF_ERROR(validate(path, value));
    if constexpr (std::is_same_v<T, std::vector<TypeRule>>) {
      return parse_rules(path, value, "type", ref(config));
    } else if constexpr (std::is_same_v<T, std::vector<PlacementRule>>) {
      return parse_rules(path, value, "tier", ref(config));
    } else {
      ref(config) = value.get<T>();
      return ok_status();
    }
  };
  row.get = [=](const EngineConfig& config) { return json(ref(const_cast<EngineConfig&>(config))); };
  return row;
}

Validator one_of(std::vector<std::string> choices) {
  return [choices](std::string_view path, const json& value) -> Status {
    for (const std::string& choice : choices) if (value == choice) return ok_status();
    std::string list;
    for (const std::string& choice : choices) list += (list.empty() ? "" : ", ") + choice;
    return Status::errorf("option '{}': unknown value {} (choose one of: {})", path, value.dump(), list);
  };
}

Validator at_least(int64_t minimum) {
  return [minimum](std::string_view path, const json& value) -> Status {
    if (value.get<double>() < static_cast<double>(minimum)) {
      return Status::errorf("option '{}' must be >= {}, found {}", path, minimum, value.dump());
    }
    return ok_status();
  };
}

Validator byte_size_or_empty(std::vector<std::string> words = {}) {
  return [words](std::string_view path, const json& value) -> Status {
    const std::string text = value.get<std::string>();
    if (text.empty()) return ok_status();
    for (const std::string& word : words) if (text == word) return ok_status();
    auto bytes = parse_byte_size(text);
    return bytes.ok() ? ok_status() : bytes.status().with_context(fmt::format("option '{}'", path));
  };
}

#define MOENAV_FIELD(member) [](EngineConfig& c) -> auto& { return c.member; }

std::vector<ConfigOption> make_options() {
  return {
      option<std::string>("weights.type", "--weights-type", "Convert weights to this type at load "
                          "(f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k); empty keeps the file's",
                          MOENAV_FIELD(weights.type)),
      option<std::vector<TypeRule>>("weights.rules", "--weights-rules",
                                    "Per-tensor type rules [{\"match\":..,\"type\":..}]",
                                    MOENAV_FIELD(weights.rules)),
      option<std::string>("weights.load", "--weights-load",
                          "copy: matrices the CPU computes from are copied into huge-page memory at "
                          "load (faster decode); mmap: used in place from the file mapping",
                          MOENAV_FIELD(weights.load), one_of({"copy", "mmap"})),
      option<std::string>("device.backend", "--backend", "Compute backend: cpu or cuda",
                          MOENAV_FIELD(device.backend), one_of({"cpu", "cuda"})),
      option<std::string>("device.gpu_memory", "--gpu-memory", "GPU memory budget, e.g. 16GiB",
                          MOENAV_FIELD(device.gpu_memory), byte_size_or_empty()),
      option<std::string>("device.host_memory", "--host-memory",
                          "Host memory budget for the expert cache (CPU build), e.g. 64MiB",
                          MOENAV_FIELD(device.host_memory), byte_size_or_empty()),
      option<int>("device.threads", "--threads,-t", "CPU threads (0 = all cores)",
                  MOENAV_FIELD(device.threads), at_least(0)),
      option<std::string>("device.gemm_precision", "--gemm-precision",
                          "CUDA prefill GEMMs: f32 (as exact as the CPU) or bf16 (tensor cores; "
                          "weights and activations rounded to bf16)",
                          MOENAV_FIELD(device.gemm_precision), one_of({"f32", "bf16"})),
      option<bool>("device.cuda_graphs", "--cuda-graphs",
                   "CUDA decode steps routed on the device replay as one recorded graph (false: "
                   "a launch per kernel)",
                   MOENAV_FIELD(device.cuda_graphs)),
      option<std::vector<PlacementRule>>("placement.rules", "--placement-rules",
                                         "Tier rules [{\"match\":..,\"tier\":..}]",
                                         MOENAV_FIELD(placement.rules)),
      option<std::string>("placement.expert_cache.size", "--cache-size",
                          "Expert cache: all, auto, slots per layer, or bytes (2GiB)",
                          MOENAV_FIELD(placement.expert_cache.size)),
      option<std::string>("placement.expert_cache.policy", "--cache-policy",
                          "Expert cache policy", MOENAV_FIELD(placement.expert_cache.policy),
                          one_of({"lru", "lfu", "lfru", "static", "priority"})),
      option<std::string>("placement.expert_cache.warm_start", "--cache-warm-start",
                          "Routing statistics file to pre-fill the cache",
                          MOENAV_FIELD(placement.expert_cache.warm_start)),
      option<std::string>("placement.expert_cache.scope", "--cache-scope",
                          "Cache slots per MoE layer (layer) or one pool (global)",
                          MOENAV_FIELD(placement.expert_cache.scope), one_of({"layer", "global"})),
      option<std::string>("placement.disk.io", "--disk-io",
                          "How the disk tier reads experts: direct (O_DIRECT), buffered, mmap",
                          MOENAV_FIELD(placement.disk_io), one_of({"direct", "buffered", "mmap"})),
      option<std::string>("prefetch.policy", "--prefetch", "Prefetch policy",
                          MOENAV_FIELD(prefetch.policy),
                          one_of({"none", "next_layer_gate", "trace"})),
      option<int>("prefetch.depth", "--prefetch-depth", "Layers to prefetch ahead",
                  MOENAV_FIELD(prefetch.depth), at_least(1)),
      option<int>("prefetch.io_threads", "--io-threads",
                  "Asynchronous expert I/O workers (0 = synchronous loads)",
                  MOENAV_FIELD(prefetch.io_threads), at_least(0)),
      option<std::string>("prefetch.max_in_flight", "--max-in-flight",
                          "Bound on expert bytes being read at once, e.g. 32MiB",
                          MOENAV_FIELD(prefetch.max_in_flight), byte_size_or_empty()),
      option<std::string>("miss.policy", "--miss-policy", "What a cache miss does",
                          MOENAV_FIELD(miss.policy), one_of({"fetch", "cpu", "lowbit", "skip", "auto", "split"})),
      option<std::string>("miss.lowbit_type", "--lowbit-type",
                          "Type of the low-precision expert copies (miss.policy = lowbit)",
                          MOENAV_FIELD(miss.lowbit_type), one_of({"q4_0", "q8_0"})),
      option<int>("routing.top_k", "--top-k-experts", "Experts per token (0 = the model's)",
                  MOENAV_FIELD(routing.top_k), at_least(0)),
      option<std::vector<int>>("routing.per_layer_top_k", "--per-layer-top-k",
                               "Experts per token for each layer, e.g. [2,2,1,1]",
                               MOENAV_FIELD(routing.per_layer_top_k)),
      option<std::string>("routing.skip.policy", "--skip-policy", "Expert skipping policy",
                          MOENAV_FIELD(routing.skip_policy), one_of({"none", "threshold", "adaptive"})),
      option<double>("routing.skip.threshold", "--skip-threshold",
                     "threshold: drop selected experts whose normalized weight is below this; "
                     "adaptive: keep each token's best experts until their weight reaches this mass",
                     MOENAV_FIELD(routing.skip_threshold), at_least(0)),
      option<bool>("routing.skip.renormalize", "--skip-renormalize",
                   "Rescale the kept experts' weights to the full selection's sum",
                   MOENAV_FIELD(routing.skip_renormalize)),
      option<std::string>("routing.prune.policy", "--prune-policy", "Expert pruning policy",
                          MOENAV_FIELD(routing.prune_policy),
                          one_of({"none", "frequency", "random", "structured"})),
      option<double>("routing.prune.fraction", "--prune-fraction", "Fraction of experts pruned",
                     MOENAV_FIELD(routing.prune_fraction), at_least(0)),
      option<std::string>("routing.prune.score", "--prune-score",
                          "Frequency pruning score: hard (selection counts) or soft (weight sums)",
                          MOENAV_FIELD(routing.prune_score), one_of({"hard", "soft"})),
      option<std::string>("routing.prune.calibration", "--prune-calibration",
                          "Routing statistics for frequency pruning (moenav trace --stats)",
                          MOENAV_FIELD(routing.prune_calibration)),
      option<std::string>("routing.prune.pattern", "--prune-pattern",
                          "Structured pruning: odd, even or tail (highest expert indices)",
                          MOENAV_FIELD(routing.prune_pattern), one_of({"odd", "even", "tail"})),
      option<int>("routing.prune.seed", "--prune-seed", "Random pruning seed",
                  MOENAV_FIELD(routing.prune_seed), at_least(0)),
      option<std::string>("routing.allocation.policy", "--k-allocation",
                          "Per-layer k allocation: none or lexi (data-free, routing.allocation.average_k)",
                          MOENAV_FIELD(routing.allocation_policy), one_of({"none", "lexi"})),
      option<double>("routing.allocation.average_k", "--average-k",
                     "Mean experts per token over MoE layers for the allocation (0 = the model's)",
                     MOENAV_FIELD(routing.allocation_average_k), at_least(0)),
      option<std::string>("kv_cache.type", "--kv-type", "KV cache element type (f16: GQA models)",
                          MOENAV_FIELD(kv_cache.type), one_of({"f32", "f16"})),
      option<int64_t>("kv_cache.context", "--context,-c", "Context length (0 = the model's)",
                      MOENAV_FIELD(kv_cache.context), at_least(0)),
      option<int>("batch.max_sequences", "--max-sequences", "Sequences decoded together",
                  MOENAV_FIELD(batch.max_sequences), at_least(1)),
      option<int>("batch.ubatch", "--ubatch", "Tokens per forward pass in prefill",
                  MOENAV_FIELD(batch.ubatch), at_least(1)),
  };
}

#undef MOENAV_FIELD

const ConfigOption* find_option(std::string_view path) {
  for (const ConfigOption& row : config_options()) if (row.path == path) return &row;
  return nullptr;
}

Status apply_object(EngineConfig& config, const json& object, const std::string& prefix) {
  for (const auto& [key, value] : object.items()) {
    const std::string path = prefix.empty() ? key : prefix + "." + key;
    if (const ConfigOption* row = find_option(path)) {
      MOENAV_RETURN_IF_ERROR(row->set(config, value));
    } else if (value.is_object()) {
      MOENAV_RETURN_IF_ERROR(apply_object(config, value, path));
    } else {
      return Status::errorf("unknown option '{}'", path);
    }
  }
  return ok_status();
}

}  // namespace

const std::vector<ConfigOption>& config_options() {
  static const std::vector<ConfigOption> kOptions = make_options();
  return kOptions;
}

Expected<EngineConfig> config_from_json(const json& document) {
  if (!document.is_object()) return Status::error("config must be a JSON object");
  EngineConfig config;
  MOENAV_RETURN_IF_ERROR(apply_object(config, document, ""));
  return config;
}

Expected<EngineConfig> config_from_file(const std::string& path) {
  std::ifstream stream(path);
  if (!stream) return Status::errorf("{}: cannot open config file", path);
  json document = json::parse(stream, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) return Status::errorf("{}: not valid JSON", path);
  auto config = config_from_json(document);
  if (!config.ok()) return config.status().with_context(path);
  return config;
}

json config_to_json(const EngineConfig& config) {
  json document = json::object();
  for (const ConfigOption& row : config_options()) {
    std::string pointer = "/";  // "device.threads" -> "/device/threads"
    pointer += row.path;
    std::replace(pointer.begin(), pointer.end(), '.', '/');
    document[json::json_pointer(pointer)] = row.get(config);
  }
  return document;
}

Status set_option(EngineConfig& config, std::string_view path, const std::string& text) {
  const ConfigOption* row = find_option(path);
  if (row == nullptr) return Status::errorf("unknown option '{}'", path);
  json value = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded() || value.is_object()) value = text;  // bare words are strings
  if (value.is_number() && row->get(config).is_string()) value = text;  // "2" as cache size
  return row->set(config, value);
}

std::string environment_name(std::string_view path) {
  std::string name = "MOENAV_";
  for (char c : path) name += c == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

Status apply_environment(EngineConfig& config) {
  for (const ConfigOption& row : config_options()) {
    if (const char* value = std::getenv(environment_name(row.path).c_str())) {
      MOENAV_RETURN_IF_ERROR(set_option(config, row.path, value)
                                 .with_context("environment " + environment_name(row.path)));
    }
  }
  return ok_status();
}

}  // namespace moenav
