// The design space the navigator searches: a base EngineConfig and dimensions, each a list of
// choices, each choice a few option-table settings (path -> JSON value). Points are the cartesian
// product. Nothing here knows what an option means: dimensions are written in option-table paths
// (engine_config.cpp), so a dimension added there plugs in through `--dim PATH=V1,V2` or the
// default table in default_space.cpp without touching the search.
//
// Quality factorization (shared/DESIGN.md §6): perplexity depends only on the settings that change
// numerics on purpose — weights.*, routing.*, kv_cache.type, and a miss policy that skips or runs a
// low-bit copy — so points sharing those share one perplexity measurement (quality_key).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "moenav/engine_config.h"
#include "moenav/status.h"

namespace moenav::tune {

struct Setting {
  std::string path;  // option-table path, "routing.top_k"
  nlohmann::json value;
};

struct Choice {
  std::string label;              // "k=1", "q4_k", "lru/4"
  std::vector<Setting> settings;  // empty: leave the base config as it is
};

struct Dimension {
  std::string name;  // "experts per token"
  std::vector<Choice> choices;
};

struct Point {
  size_t index = 0;
  EngineConfig config;
  nlohmann::json delta;      // {path: value} of options that differ from EngineConfig{}
  std::string key;           // delta.dump(): the identity of the point in the results store
  std::string quality_key;   // the part of delta that can change the numbers
  std::string label;         // choice labels that differ from the base, or "baseline"
};

// Options whose value can change the model's numbers (and so perplexity).
bool affects_quality(std::string_view path, const nlohmann::json& value);

// {path: value} of every option where `config` differs from a default EngineConfig.
nlohmann::json config_delta(const EngineConfig& config);
std::string quality_key(const EngineConfig& config);
// Builds a Point (key, label) for a config outside any space (the baseline, a stored row).
Point make_point(const EngineConfig& config, std::string label);

class ConfigSpace {
 public:
  EngineConfig base;
  std::vector<Dimension> dimensions;
  std::vector<std::string> notes;  // dimensions dropped and why

  size_t size() const;
  // Point `index` of the product (mixed radix, first dimension slowest). Errors name the setting
  // the option table rejected.
  Expected<Point> point(size_t index) const;
  Expected<std::vector<Point>> enumerate() const;

  // Adds or replaces a dimension from "PATH=V1,V2,..." (values as JSON where they parse, else
  // strings; "PATH1+PATH2=a+b,c+d" sets several paths per choice).
  Status add_dimension_text(const std::string& text);
  // Removes choices whose settings the option table rejects; returns the messages.
  std::vector<std::string> validate();
  nlohmann::json to_json() const;
};

}  // namespace moenav::tune
