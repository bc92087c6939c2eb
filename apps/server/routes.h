// The HTTP routes: /v1/completions, /v1/chat/completions (SSE streaming or whole), /v1/models,
// /health, /metrics, and OpenAI-shaped JSON errors for everything else (404, 405, 413, ...).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace httplib {
class Server;
}

namespace moenav {
class Engine;
}

namespace moenav::server {

class ChatTemplate;
class Metrics;
class Scheduler;

// What the handler threads share. Outlives the httplib server.
struct ServerState {
  Engine& engine;
  Scheduler& scheduler;
  Metrics& metrics;
  const ChatTemplate& chat_template;
  std::string model_name;
  int64_t max_body_bytes;
  int64_t started = 0;                  // unix seconds, for /v1/models
  std::atomic<bool> draining{false};    // SIGTERM: new generations get 503
  std::atomic<int64_t> open_responses{0};  // generation responses not yet fully written
};

void install_routes(httplib::Server& server, ServerState& state);

}  // namespace moenav::server
