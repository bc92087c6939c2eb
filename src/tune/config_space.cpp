#include "tune/config_space.h"

#include <fmt/format.h>

namespace moenav::tune {
namespace {

using nlohmann::json;

// Every option's value by path, from the option table.
json flat_options(const EngineConfig& config) {
  json flat = json::object();
  for (const ConfigOption& row : config_options()) flat[std::string(row.path)] = row.get(config);
  return flat;
}

const json& default_options() {
  static const json kDefaults = flat_options(EngineConfig{});
  return kDefaults;
}

bool path_starts_with(std::string_view path, std::string_view prefix) {
  return path.substr(0, prefix.size()) == prefix;
}

bool numerics_changing_miss_policy(const json& delta) {
  auto it = delta.find("miss.policy");
  return it != delta.end() && (*it == "skip" || *it == "lowbit");
}

Status apply_choice(EngineConfig& config, const Choice& choice) {
  for (const Setting& setting : choice.settings) {
    const ConfigOption* row = nullptr;
    for (const ConfigOption& candidate : config_options()) {
      if (candidate.path == setting.path) row = &candidate;
    }
    if (row == nullptr) {
      return Status::errorf("'{}' is not an engine option (see `moenav bench --help`)", setting.path);
    }
    MOENAV_RETURN_IF_ERROR(row->set(config, setting.value));
  }
  return ok_status();
}

// A value typed on the command line: JSON when it parses ("2", "0.5", "[1,2]"), else a string.
json value_from_text(const std::string& text) {
  json value = json::parse(text, nullptr, /*allow_exceptions=*/false);
  return value.is_discarded() || value.is_object() ? json(text) : value;
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  size_t begin = 0;
  int depth = 0;  // do not split inside [...] (per-layer lists)
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i < text.size() && text[i] == '[') ++depth;
    if (i < text.size() && text[i] == ']') --depth;
    if (i == text.size() || (text[i] == separator && depth == 0)) {
      parts.push_back(text.substr(begin, i - begin));
      begin = i + 1;
    }
  }
  return parts;
}

}  // namespace

bool affects_quality(std::string_view path, const json& value) {
  if (path_starts_with(path, "weights.") || path_starts_with(path, "routing.")) return true;
  if (path == "kv_cache.type") return true;
  if (path == "miss.policy") return value == "skip" || value == "lowbit";
  return false;
}

json config_delta(const EngineConfig& config) {
  const json flat = flat_options(config);
  json delta = json::object();
  for (const auto& [path, value] : flat.items()) {
    if (!default_options().contains(path) || default_options()[path] != value) delta[path] = value;
  }
  return delta;
}

std::string quality_key(const EngineConfig& config) {
  const json delta = config_delta(config);
  // A miss policy that skips experts or runs low-bit copies makes the numbers depend on what is
  // resident, so then the whole placement belongs to the quality key.
  const bool placement_matters = numerics_changing_miss_policy(delta);
  json key = json::object();
  for (const auto& [path, value] : delta.items()) {
    const bool placement = path_starts_with(path, "placement.") || path_starts_with(path, "prefetch.") ||
                           path_starts_with(path, "device.host_memory") ||
                           path_starts_with(path, "device.gpu_memory");
    if (affects_quality(path, value) || (placement_matters && placement)) key[path] = value;
  }
  return key.dump();
}

Point make_point(const EngineConfig& config, std::string label) {
  Point point;
  point.config = config;
  point.delta = config_delta(config);
  point.key = point.delta.dump();
  point.quality_key = quality_key(config);
  point.label = std::move(label);
  return point;
}

size_t ConfigSpace::size() const {
  size_t total = 1;
  for (const Dimension& dimension : dimensions) total *= dimension.choices.size();
  return dimensions.empty() ? 1 : total;
}

Expected<Point> ConfigSpace::point(size_t index) const {
  if (index >= size()) return Status::errorf("point {} is outside the space of {}", index, size());
  EngineConfig config = base;
  std::string label;
  size_t rest = index;
  std::vector<size_t> digits(dimensions.size());
  for (size_t d = dimensions.size(); d-- > 0;) {
    digits[d] = rest % dimensions[d].choices.size();
    rest /= dimensions[d].choices.size();
  }
  const json base_delta = config_delta(base);
  for (size_t d = 0; d < dimensions.size(); ++d) {
    const Choice& choice = dimensions[d].choices[digits[d]];
    Status status = apply_choice(config, choice);
    if (!status.ok()) {
      return status.with_context(fmt::format("dimension '{}', choice '{}'", dimensions[d].name, choice.label));
    }
    // Name only the choices that move away from the base config.
    EngineConfig base_only = base;
    (void)apply_choice(base_only, choice);
    if (config_delta(base_only) != base_delta) label += (label.empty() ? "" : " ") + choice.label;
  }
  Point point = make_point(config, label.empty() ? "baseline" : label);
  point.index = index;
  return point;
}

Expected<std::vector<Point>> ConfigSpace::enumerate() const {
  std::vector<Point> points;
  points.reserve(size());
  for (size_t i = 0; i < size(); ++i) {
    MOENAV_ASSIGN_OR_RETURN(Point point, this->point(i));
    points.push_back(std::move(point));
  }
  return points;
}

Status ConfigSpace::add_dimension_text(const std::string& text) {
  const size_t equals = text.find('=');
  if (equals == std::string::npos || equals == 0 || equals + 1 == text.size()) {
    return Status::errorf("--dim '{}': write PATH=V1,V2,... (e.g. routing.top_k=1,2,4)", text);
  }
  const std::vector<std::string> paths = split(text.substr(0, equals), '+');
  Dimension dimension;
  dimension.name = text.substr(0, equals);
  for (const std::string& choice_text : split(text.substr(equals + 1), ',')) {
    const std::vector<std::string> values = split(choice_text, '+');
    if (values.size() != paths.size()) {
      return Status::errorf("--dim '{}': choice '{}' has {} values for {} paths", text, choice_text,
                            values.size(), paths.size());
    }
    Choice choice;
    choice.label = paths.size() == 1 ? fmt::format("{}={}", paths[0].substr(paths[0].rfind('.') + 1), choice_text)
                                     : choice_text;
    for (size_t i = 0; i < paths.size(); ++i) choice.settings.push_back({paths[i], value_from_text(values[i])});
    EngineConfig probe = base;
    MOENAV_RETURN_IF_ERROR(apply_choice(probe, choice).with_context(fmt::format("--dim '{}'", text)));
    dimension.choices.push_back(std::move(choice));
  }
  for (Dimension& existing : dimensions) {
    if (existing.name == dimension.name ||
        (existing.choices.size() > 0 && existing.choices.back().settings.size() == 1 && paths.size() == 1 &&
         existing.choices.back().settings[0].path == paths[0])) {
      existing = std::move(dimension);
      return ok_status();
    }
  }
  dimensions.push_back(std::move(dimension));
  return ok_status();
}

std::vector<std::string> ConfigSpace::validate() {
  std::vector<std::string> messages;
  for (Dimension& dimension : dimensions) {
    std::vector<Choice> kept;
    for (Choice& choice : dimension.choices) {
      EngineConfig probe = base;
      Status status = apply_choice(probe, choice);
      if (status.ok()) kept.push_back(std::move(choice));
      else messages.push_back(fmt::format("{} '{}': {}", dimension.name, choice.label, status.message()));
    }
    dimension.choices = std::move(kept);
  }
  std::erase_if(dimensions, [](const Dimension& dimension) { return dimension.choices.empty(); });
  return messages;
}

json ConfigSpace::to_json() const {
  json out = json::array();
  for (const Dimension& dimension : dimensions) {
    json choices = json::array();
    for (const Choice& choice : dimension.choices) {
      json settings = json::object();
      for (const Setting& setting : choice.settings) settings[setting.path] = setting.value;
      choices.push_back({{"label", choice.label}, {"settings", settings}});
    }
    out.push_back({{"name", dimension.name}, {"choices", choices}});
  }
  return out;
}

}  // namespace moenav::tune
