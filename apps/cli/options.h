// Command-line plumbing shared by all subcommands: the engine option table becomes flags on each
// subcommand, and --config FILE, MOENAV_* variables and flags are merged (flags win).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "moenav/engine.h"
#include "moenav/engine_config.h"

namespace moenav::cli {

struct EngineOptions {
  std::string model;
  std::string config_file;
  std::map<std::string, std::string> flag_values;  // option path -> text given on the command line
};

// Adds MODEL, --config and one flag per engine option to `command`.
void add_engine_options(CLI::App& command, EngineOptions& options);

// File, then environment, then flags.
Expected<EngineConfig> resolve_config(const EngineOptions& options);
// Whether the option at `path` ("device.backend") was set by a flag, the environment or the file.
bool option_given(const EngineOptions& options, std::string_view path);

// resolve_config + Engine::create, printing the error on failure.
std::unique_ptr<Engine> open_engine(const EngineOptions& options);

// Prints "moenav: <message>" to stderr and returns the exit code for errors.
int fail(const Status& status);

// Subcommand registration; each returns the exit code through `exit_code` when run.
void register_generate(CLI::App& app, int& exit_code);
void register_perplexity(CLI::App& app, int& exit_code);
void register_logits(CLI::App& app, int& exit_code);
void register_bench(CLI::App& app, int& exit_code);
void register_inspect(CLI::App& app, int& exit_code);
void register_trace(CLI::App& app, int& exit_code);  // trace and simulate
void register_convert(CLI::App& app, int& exit_code);
void register_quantize(CLI::App& app, int& exit_code);
void register_serve(CLI::App& app, int& exit_code);
void register_tune(CLI::App& app, int& exit_code);
void register_report(CLI::App& app, int& exit_code);

}  // namespace moenav::cli
