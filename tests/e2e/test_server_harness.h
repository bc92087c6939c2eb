// Shared by the test_server*.cpp tests: starts `moenav serve` on the embedded model on a free
// loopback port (--port 0, the port read back from its log), talks to it over HTTP, parses SSE
// streams, computes single-sequence greedy references in-process, and stops it with SIGTERM.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "moenav/engine.h"
#include "runtime/generate.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace moenav::testing {

using Json = nlohmann::json;

inline std::string tiny_model() { return source_path("models/tiny-mixtral"); }

inline std::string read_file_text(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream buffer;
  buffer << file.rdbuf();
  return buffer.str();
}

class ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> extra_args = {}) {
    signal(SIGPIPE, SIG_IGN);  // the tests close sockets on a server that is still writing
    static int counter = 0;
    log_path_ = (std::filesystem::temp_directory_path() /
                 ("moenav_serve_" + std::to_string(getpid()) + "_" + std::to_string(counter++) + ".log")).string();
    std::vector<std::string> args = {moenav_binary(), "serve", tiny_model(), "--host", "127.0.0.1", "--port", "0"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    start(args);
  }
  ~ServerProcess() {
    if (pid_ > 0) terminate(30.0);
    std::filesystem::remove(log_path_);
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  bool ok() const { return port_ > 0; }
  std::string log() const { return read_file_text(log_path_); }

  std::unique_ptr<httplib::Client> client(int timeout_seconds = 60) const {
    auto client = std::make_unique<httplib::Client>("127.0.0.1", port_);
    client->set_read_timeout(timeout_seconds, 0);
    client->set_write_timeout(timeout_seconds, 0);
    client->set_connection_timeout(5, 0);
    return client;
  }

  // SIGTERM, then waits up to timeout_seconds; returns the exit status, or -1 if it had to be
  // killed (or died by a signal).
  int terminate(double timeout_seconds) {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return -1;
  }

  bool alive() {
    if (pid_ <= 0) return false;
    int status = 0;
    return waitpid(pid_, &status, WNOHANG) == 0;
  }

 private:
  void start(const std::vector<std::string>& args) {
    std::vector<char*> argv;
    for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {  // only async-signal-safe calls until exec
      const int log = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(log, 1);
      dup2(log, 2);
      execv(argv[0], argv.data());
      _exit(127);
    }
    const std::regex listening(R"(listening on http://127\.0\.0\.1:(\d+))");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (std::chrono::steady_clock::now() < deadline && alive()) {
      std::smatch match;
      const std::string text = log();
      if (std::regex_search(text, match, listening)) {
        port_ = std::stoi(match[1]);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  pid_t pid_ = -1;
  int port_ = -1;
  std::string log_path_;
};

// The data: events of an SSE body, up to (not including) [DONE]; *done says whether it came.
inline std::vector<Json> sse_events(const std::string& body, bool* done) {
  std::vector<Json> events;
  *done = false;
  size_t begin = 0;
  while (begin < body.size()) {
    size_t end = body.find("\n\n", begin);
    if (end == std::string::npos) end = body.size();
    const std::string event = body.substr(begin, end - begin);
    begin = end + 2;
    if (!event.starts_with("data: ")) continue;  // comments (keep-alive)
    const std::string data = event.substr(6);
    if (data == "[DONE]") {
      *done = true;
      break;
    }
    events.push_back(Json::parse(data));
  }
  return events;
}

struct StreamResult {
  int status = 0;
  std::string text;           // concatenated deltas
  std::string finish_reason;  // from the last chunk that has one
  bool done = false;          // [DONE] arrived
  Json usage;
  size_t chunks = 0;
};

inline StreamResult collect_stream(const httplib::Result& result, bool chat) {
  StreamResult out;
  if (!result) return out;
  out.status = result->status;
  if (out.status != 200) return out;
  const std::vector<Json> events = sse_events(result->body, &out.done);
  for (const Json& event : events) {
    ++out.chunks;
    if (event.contains("usage") && !event["usage"].is_null()) out.usage = event["usage"];
    if (!event.contains("choices") || event["choices"].empty()) continue;
    const Json& choice = event["choices"][0];
    if (chat && choice["delta"].contains("content")) out.text += choice["delta"]["content"].get<std::string>();
    if (!chat) out.text += choice["text"].get<std::string>();
    if (!choice["finish_reason"].is_null()) out.finish_reason = choice["finish_reason"].get<std::string>();
  }
  return out;
}

inline httplib::Result post_json(httplib::Client& client, const std::string& path, const Json& body) {
  return client.Post(path.c_str(), body.dump(), "application/json");
}

// The engine's single-sequence greedy continuation as text (generate(), the loop behind
// `moenav generate`), to compare server outputs with.
class GreedyReference {
 public:
  GreedyReference() {
    EngineConfig config;
    config.device.threads = 1;  // leave the cores to the server under test
    auto engine = Engine::create(tiny_model(), config);
    if (engine.ok()) engine_ = std::move(engine).value();
  }
  bool ok() const { return engine_ != nullptr; }
  Engine& engine() { return *engine_; }

  std::string text(const std::string& prompt, int64_t max_tokens, bool stop_at_eos = true) {
    return text_of_ids(engine_->tokenizer().encode(prompt, engine_->tokenizer().add_bos_by_default()), max_tokens,
                       stop_at_eos);
  }
  std::string text_of_ids(const std::vector<int32_t>& prompt, int64_t max_tokens, bool stop_at_eos = true) {
    auto session = engine_->new_session();
    GenerationOptions options;
    options.max_tokens = max_tokens;
    options.stop_at_eos = stop_at_eos;
    auto result = generate(*engine_, *session, prompt, options);
    if (!result.ok()) return "<error: " + result.error() + ">";
    std::string text;
    for (int32_t token : result->tokens) text += engine_->tokenizer().decode_token(token);
    return text;
  }

 private:
  std::unique_ptr<Engine> engine_;
};

// ---- raw sockets, for requests a well-behaved client library will not send -----------------

inline int connect_loopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

inline bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t sent = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (sent <= 0) return false;
    data.remove_prefix(static_cast<size_t>(sent));
  }
  return true;
}

// Reads until the peer closes, `limit` bytes arrive, or timeout; *closed says whether it closed.
inline std::string receive(int fd, double timeout_seconds, bool* closed = nullptr, size_t limit = 1 << 20) {
  std::string data;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
  if (closed) *closed = false;
  while (data.size() < limit) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd poll_fd{fd, POLLIN, 0};
    if (poll(&poll_fd, 1, static_cast<int>(left.count())) <= 0) break;
    char buffer[4096];
    const ssize_t got = recv(fd, buffer, sizeof(buffer), 0);
    if (got <= 0) {
      if (closed) *closed = true;
      break;
    }
    data.append(buffer, static_cast<size_t>(got));
  }
  return data;
}

// Status code of a raw HTTP response, 0 when there is none.
inline int status_of(const std::string& response) {
  std::smatch match;
  static const std::regex status_line(R"(^HTTP/1\.[01] (\d{3}))");
  return std::regex_search(response, match, status_line) ? std::stoi(match[1]) : 0;
}

}  // namespace moenav::testing
