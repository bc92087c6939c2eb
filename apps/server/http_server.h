// `moenav serve`: the OpenAI-compatible HTTP server around one Engine (shared/DESIGN.md §7).
// Owns the scheduler's engine thread, httplib's worker threads and the shutdown sequence:
// SIGTERM/SIGINT -> new generations get 503 -> in-flight ones finish (up to the drain timeout,
// then they are cancelled) -> the listener closes -> exit 0.
#pragma once

#include <signal.h>

#include <cstdint>
#include <string>

namespace moenav {
class Engine;
}

namespace moenav::server {

struct ServerOptions {
  std::string host = "127.0.0.1";  // loopback unless told otherwise
  int port = 8080;                 // 0: any free port (printed on stderr)
  std::string model_name;          // id in /v1/models and responses
  int max_sequences = 32;          // sequences decoded together
  int64_t ubatch = 512;            // prompt tokens per step
  int http_threads = 0;            // 0: enough for max_sequences streams plus headroom
  int read_timeout_seconds = 10;   // a client that stalls while sending is dropped after this
  int write_timeout_seconds = 10;
  int64_t max_body_bytes = int64_t{1} << 20;  // larger bodies get 413
  double drain_timeout_seconds = 30;          // after SIGTERM, before in-flight work is cancelled
};

// Blocks SIGTERM and SIGINT (taken by sigwait in run_server) and ignores SIGPIPE (a write to a
// client that left must fail, not kill the process). Call before any thread starts, the
// engine's included, so every thread inherits the mask.
sigset_t block_shutdown_signals();

// Runs until SIGTERM or SIGINT; returns the process exit code.
int run_server(Engine& engine, const ServerOptions& options);

}  // namespace moenav::server
