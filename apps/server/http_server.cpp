#include "http_server.h"

#include <signal.h>
#include <sys/socket.h>

#include <chrono>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>

#include "moenav/engine.h"
#include "chat_template.h"
#include "metrics.h"
#include "routes.h"
#include "scheduler.h"
#include "tokenizer/tokenizer.h"

namespace moenav::server {
namespace {

using Clock = std::chrono::steady_clock;

void configure(httplib::Server& server, const ServerOptions& options) {
  const int threads = options.http_threads > 0 ? options.http_threads : options.max_sequences * 2 + 16;
  server.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  server.set_read_timeout(options.read_timeout_seconds, 0);
  server.set_write_timeout(options.write_timeout_seconds, 0);
  server.set_keep_alive_timeout(5);
  server.set_keep_alive_max_count(1000);
  server.set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
  server.set_tcp_nodelay(true);  // streamed tokens are small writes; do not let Nagle hold them
}

// cpp-httplib listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, fixed when Debian built the
// library): a burst of concurrent clients overflows it and the dropped SYNs are retried only after
// a second. The socket-options hook sees the listening socket, so it can be re-listened with a
// real backlog once bound (listen() on a listening socket just changes its backlog).
constexpr int kListenBacklog = 1024;

void remember_listening_socket(httplib::Server& server, int& listening_socket) {
  server.set_socket_options([&listening_socket](socket_t sock) {
    httplib::default_socket_options(sock);
    listening_socket = sock;
  });
}

// Waits for in-flight generations to end (bounded), then cancels whatever is left.
void drain(ServerState& state, Scheduler& scheduler, double timeout_seconds) {
  state.draining = true;
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_seconds);
  auto idle = [&] { return scheduler.in_flight() == 0 && state.open_responses == 0; };
  while (!idle() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (idle()) return;
  fmt::print(stderr, "moenav serve: drain timeout; cancelling {} sequences\n", scheduler.in_flight());
  scheduler.cancel_all();
  // Handlers see the cancellation at their next wait (at most a heartbeat) and write their end.
  const auto grace = Clock::now() + std::chrono::seconds(5);
  while (!idle() && Clock::now() < grace) std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

int serve_until_signal(httplib::Server& server, ServerState& state, const ServerOptions& options,
                       const sigset_t& signals) {
  int listening_socket = -1;
  remember_listening_socket(server, listening_socket);
  const int port = options.port == 0 ? server.bind_to_any_port(options.host)
                                     : (server.bind_to_port(options.host, options.port) ? options.port : -1);
  if (port < 0) {
    fmt::print(stderr, "moenav: error: cannot listen on {}:{} (in use, or not a local address)\n", options.host,
               options.port);
    return 1;
  }
  if (listening_socket >= 0) ::listen(listening_socket, kListenBacklog);
  fmt::print(stderr, "moenav serve: model '{}' ({} sequences, context {}) listening on http://{}:{}\n",
             options.model_name, options.max_sequences, state.engine.context_length(), options.host, port);
  std::thread listener([&server] { server.listen_after_bind(); });
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  fmt::print(stderr, "moenav serve: {} received; draining\n", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  drain(state, state.scheduler, options.drain_timeout_seconds);
  server.stop();
  listener.join();
  return 0;
}

}  // namespace

sigset_t block_shutdown_signals() {
  signal(SIGPIPE, SIG_IGN);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

int run_server(Engine& engine, const ServerOptions& options) {
  const sigset_t signals = block_shutdown_signals();
  if (Status status = engine.require_tokenizer(); !status.ok()) {
    fmt::print(stderr, "moenav: error: {}\n", status.message());
    return 1;
  }
  Metrics metrics(engine);
  engine.set_routing_observer([&metrics](int64_t, const Routing& routing) { metrics.observe_routing(routing); });
  std::string warning;
  const ChatTemplate chat_template = ChatTemplate::for_model(engine.tokenizer(), &warning);
  if (!warning.empty()) fmt::print(stderr, "moenav serve: {}\n", warning);

  int exit_code = 0;
  {  // everything that calls into the engine ends before the observer is removed
    Scheduler scheduler(engine, SchedulerOptions{options.max_sequences, options.ubatch}, &metrics);
    ServerState state{engine, scheduler, metrics, chat_template, options.model_name, options.max_body_bytes};
    state.started = std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::system_clock::now().time_since_epoch()).count();
    httplib::Server server;
    configure(server, options);
    install_routes(server, state);
    exit_code = serve_until_signal(server, state, options, signals);
  }
  engine.set_routing_observer({});
  if (exit_code != 0) return exit_code;
  fmt::print(stderr, "moenav serve: stopped\n");
  return 0;
}

}  // namespace moenav::server
