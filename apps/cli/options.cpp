#include "cli/options.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace moenav::cli {

void add_engine_options(CLI::App& command, EngineOptions& options) {
  command.add_option("model", options.model, "Hugging Face model directory or .gguf file")->required();
  command.add_option("--config", options.config_file, "EngineConfig JSON file (from `moenav tune`)");
  for (const ConfigOption& row : config_options()) {
    const std::string path(row.path);
    command.add_option_function<std::string>(
        std::string(row.flag),
        [&options, path](const std::string& value) { options.flag_values[path] = value; },
        fmt::format("{} [{}]", row.help, path))->group("Engine options");
  }
}

Expected<EngineConfig> resolve_config(const EngineOptions& options) {
  EngineConfig config;
  if (!options.config_file.empty()) {
    MOENAV_ASSIGN_OR_RETURN(config, config_from_file(options.config_file));
  }
  MOENAV_RETURN_IF_ERROR(apply_environment(config));
  for (const auto& [path, value] : options.flag_values) {
    MOENAV_RETURN_IF_ERROR(set_option(config, path, value));
  }
  return config;
}

bool option_given(const EngineOptions& options, std::string_view path) {
  if (options.flag_values.count(std::string(path)) > 0) return true;
  if (std::getenv(environment_name(path).c_str()) != nullptr) return true;
  if (options.config_file.empty()) return false;
  std::ifstream stream(options.config_file);
  const nlohmann::json document = nlohmann::json::parse(stream, nullptr, /*allow_exceptions=*/false);
  std::string pointer = "/" + std::string(path);
  std::replace(pointer.begin(), pointer.end(), '.', '/');
  return !document.is_discarded() && document.contains(nlohmann::json::json_pointer(pointer));
}

std::unique_ptr<Engine> open_engine(const EngineOptions& options) {
  auto config = resolve_config(options);
  if (!config.ok()) {
    fail(config.status());
    return nullptr;
  }
  auto engine = Engine::create(options.model, *config);
  if (!engine.ok()) {
    fail(engine.status());
    return nullptr;
  }
  return std::move(engine).value();
}

int fail(const Status& status) {
  fmt::print(stderr, "moenav: error: {}\n", status.message());
  return 1;
}

}  // namespace moenav::cli
