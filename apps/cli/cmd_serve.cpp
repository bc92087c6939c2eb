// `moenav serve MODEL [--config tuned.json] [--host 127.0.0.1] [--port 8080]`: the
// OpenAI-compatible HTTP server (apps/server/http_server.h), with the engine option flags.
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/options.h"
#include "server/http_server.h"

namespace moenav::cli {
namespace {

// Default for serving when nothing set batch.max_sequences: EngineConfig's default of 1 suits
// one-sequence commands, a server wants a batch.
constexpr int kServeMaxSequences = 32;

struct ServeArgs {
  EngineOptions engine;
  server::ServerOptions server;
};

// Whether batch.max_sequences was given by a flag, the environment or the config file.
bool max_sequences_explicit(const EngineOptions& options) {
  if (options.flag_values.contains("batch.max_sequences")) return true;
  if (std::getenv(environment_name("batch.max_sequences").c_str())) return true;
  if (options.config_file.empty()) return false;
  std::ifstream file(options.config_file);
  const nlohmann::json document = nlohmann::json::parse(file, nullptr, false);
  return document.is_object() && document.contains("batch") && document["batch"].is_object() &&
         document["batch"].contains("max_sequences");
}

std::string default_model_name(const std::string& model_path) {
  std::filesystem::path path(model_path);
  if (!path.has_filename()) path = path.parent_path();  // "models/tiny-mixtral/"
  return path.has_extension() && path.extension() == ".gguf" ? path.stem().string() : path.filename().string();
}

int run_serve(ServeArgs& args) {
  // Before the engine starts its threads, so they inherit the signal mask.
  server::block_shutdown_signals();
  auto config = resolve_config(args.engine);
  if (!config.ok()) return fail(config.status());
  if (!max_sequences_explicit(args.engine)) config->batch.max_sequences = kServeMaxSequences;
  auto engine = Engine::create(args.engine.model, *config);
  if (!engine.ok()) return fail(engine.status());
  args.server.max_sequences = config->batch.max_sequences;
  args.server.ubatch = config->batch.ubatch;
  if (args.server.model_name.empty()) args.server.model_name = default_model_name(args.engine.model);
  return server::run_server(**engine, args.server);
}

}  // namespace

void register_serve(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* command = app.add_subcommand("serve", "OpenAI-compatible HTTP server (continuous batching)");
  add_engine_options(*command, args->engine);
  server::ServerOptions& options = args->server;
  command->add_option("--host", options.host, "Address to listen on (default: loopback only)");
  command->add_option("--port", options.port, "Port (0 = any free port, printed on stderr)")->check(CLI::Range(0, 65535));
  command->add_option("--model-name", options.model_name, "Model id in /v1/models (default: MODEL's name)");
  command->add_option("--http-threads", options.http_threads, "HTTP worker threads (0 = 2 x max-sequences + 16)")
      ->check(CLI::Range(0, 4096));
  command->add_option("--read-timeout", options.read_timeout_seconds, "Seconds a client may stall while sending")
      ->check(CLI::Range(1, 3600));
  command->add_option("--write-timeout", options.write_timeout_seconds, "Seconds a client may stall while receiving")
      ->check(CLI::Range(1, 3600));
  command->add_option("--max-body", options.max_body_bytes, "Largest request body in bytes (larger: 413)")
      ->check(CLI::Range(int64_t{1024}, int64_t{1} << 30));
  command->add_option("--drain-timeout", options.drain_timeout_seconds,
                      "Seconds in-flight requests may finish after SIGTERM before they are cancelled")
      ->check(CLI::Range(0.0, 3600.0));
  command->callback([args, &exit_code] { exit_code = run_serve(*args); });
}

}  // namespace moenav::cli
