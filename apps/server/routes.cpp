// Handlers run on httplib's worker threads. A generation handler validates the body, submits the
// request to the scheduler and then only relays what the engine thread publishes: as SSE events
// (stream: true) or as one JSON object. A client that goes away is noticed when a write fails
// (cpp-httplib's DataSink::write), which cancels its sequence; the writes include a heartbeat, so
// a client waiting behind others is noticed too.
#include "routes.h"

#include <chrono>
#include <memory>

#include <fmt/format.h>
#include <httplib.h>

#include "moenav/engine.h"
#include "chat_template.h"
#include "metrics.h"
#include "request.h"
#include "responses.h"
#include "scheduler.h"

namespace moenav::server {
namespace {

using Json = nlohmann::json;
using std::chrono::milliseconds;

// A whole (non-streamed) response that takes longer than this switches to a chunked body that
// starts with whitespace heartbeats (JSON allows leading whitespace) to notice disconnects.
constexpr milliseconds kDirectWait{2000};
constexpr milliseconds kHeartbeat{1000};

void send_json(httplib::Response& res, int status, const Json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& error) { send_json(res, error.status, error_body(error)); }

ApiError server_error(int status, std::string message, std::string code) {
  return ApiError{status, std::move(message), status == 503 ? "server_error" : "internal_error", "", std::move(code)};
}

// The error for a sequence that ended without a normal finish.
ApiError sequence_error(const SequenceUpdate& update) {
  if (update.finish_reason == "error") return server_error(500, "Generation failed: " + update.error, "engine_error");
  return server_error(503, "The request was cancelled because the server is shutting down.", "cancelled");
}

// Decrements ServerState::open_responses when the response object lets go of it.
struct OpenResponse {
  explicit OpenResponse(ServerState& state) : state(state) { ++state.open_responses; }
  ~OpenResponse() { --state.open_responses; }
  ServerState& state;
};

struct StreamState {
  StreamState(ServerState& server, std::shared_ptr<Sequence> sequence, ResponseMeta meta, bool include_usage)
      : open(server), sequence(std::move(sequence)), meta(std::move(meta)), include_usage(include_usage) {}
  OpenResponse open;
  std::shared_ptr<Sequence> sequence;
  ResponseMeta meta;
  bool include_usage;
  bool role_sent = false;
  int64_t text_offset = 0;
  SequenceUpdate whole;  // non-streaming: everything so far
};

// SSE events for one update: text chunk(s), and at the end the finish chunk, usage and [DONE].
std::string stream_events(StreamState& stream, const Tokenizer& tokenizer, const SequenceUpdate& update) {
  std::string out;
  const bool normal_end = update.finished && !finish_reason(update).empty();
  if (!update.text.empty() || !update.logprobs.empty() || normal_end) {
    out += sse_event(stream_chunk(stream.meta, tokenizer, update.text, update.logprobs,
                                  normal_end ? finish_reason(update) : std::string(), &stream.text_offset));
  }
  if (!update.finished) return out;
  if (!normal_end) out += sse_event(error_body(sequence_error(update)));
  if (normal_end && stream.include_usage) {
    out += sse_event(usage_chunk(stream.meta, update.prompt_tokens, update.completion_tokens));
  }
  return out + kSseDone;
}

void stream_response(ServerState& state, httplib::Response& res, std::shared_ptr<StreamState> stream) {
  res.set_header("Cache-Control", "no-cache");
  const Tokenizer* tokenizer = &state.engine.tokenizer();
  res.set_chunked_content_provider(
      "text/event-stream",
      [stream, tokenizer](size_t, httplib::DataSink& sink) {
        std::string out;
        if (stream->meta.endpoint == Endpoint::ChatCompletions && !stream->role_sent) {
          out += sse_event(chat_role_chunk(stream->meta));
          stream->role_sent = true;
        }
        SequenceUpdate update;
        if (stream->sequence->wait(&update, kHeartbeat)) out += stream_events(*stream, *tokenizer, update);
        if (out.empty()) out = ": keep-alive\n\n";  // an SSE comment: clients ignore it
        if (!sink.write(out.data(), out.size())) {
          stream->sequence->cancel();
          return false;
        }
        if (update.finished) sink.done();
        return true;
      },
      [stream](bool success) {
        if (!success) stream->sequence->cancel();
      });
}

void finish_whole(httplib::Response& res, const ResponseMeta& meta, const Tokenizer& tokenizer,
                  const SequenceUpdate& result) {
  if (finish_reason(result).empty()) return send_error(res, sequence_error(result));
  send_json(res, 200, full_response(meta, tokenizer, result));
}

void whole_response(ServerState& state, httplib::Response& res, std::shared_ptr<StreamState> stream) {
  const Tokenizer& tokenizer = state.engine.tokenizer();
  const auto deadline = std::chrono::steady_clock::now() + kDirectWait;
  while (!stream->whole.finished && std::chrono::steady_clock::now() < deadline) {
    stream->sequence->wait(&stream->whole, std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now()));
  }
  if (stream->whole.finished) return finish_whole(res, stream->meta, tokenizer, stream->whole);
  // Past this point the status is committed to 200; a late failure is an error object in the body.
  res.set_chunked_content_provider(
      "application/json",
      [stream, &tokenizer](size_t, httplib::DataSink& sink) {
        stream->sequence->wait(&stream->whole, kHeartbeat);
        const SequenceUpdate& result = stream->whole;
        const std::string out = !result.finished ? std::string(" ")
                                : finish_reason(result).empty() ? dump(error_body(sequence_error(result)))
                                                                : dump(full_response(stream->meta, tokenizer, result));
        if (!sink.write(out.data(), out.size())) {
          stream->sequence->cancel();
          return false;
        }
        if (result.finished) sink.done();
        return true;
      },
      [stream](bool success) {
        if (!success) stream->sequence->cancel();
      });
}

void handle_generation(ServerState& state, Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
  if (state.draining) return send_error(res, server_error(503, "The server is shutting down.", "shutting_down"));
  auto parsed = parse_request(endpoint, req.body, RequestContext{&state.engine, &state.chat_template});
  if (const ApiError* error = std::get_if<ApiError>(&parsed)) return send_error(res, *error);
  ParsedRequest& request = std::get<ParsedRequest>(parsed);
  ResponseMeta meta = make_meta(endpoint, state.model_name, request.logprobs);
  auto stream = std::make_shared<StreamState>(state, state.scheduler.submit(std::move(request.generation)),
                                              std::move(meta), request.include_usage);
  if (request.stream) return stream_response(state, res, std::move(stream));
  whole_response(state, res, std::move(stream));
}

Json models_list(const ServerState& state) {
  const Json model = {{"id", state.model_name}, {"object", "model"}, {"created", state.started}, {"owned_by", "moenav"},
                      {"max_model_len", state.engine.context_length()}};
  return {{"object", "list"}, {"data", Json::array({model})}};
}

// The messages of errors httplib produces itself, before any handler runs.
std::string status_message(int status, const ServerState& state, const httplib::Request& req) {
  switch (status) {
    case 400: return "Malformed HTTP request.";
    case 404: return fmt::format("Unknown request URL: {} {}.", req.method, req.path);
    case 405: return fmt::format("Method {} is not allowed on {}.", req.method, req.path);
    case 413: return fmt::format("The request body is larger than the limit of {} bytes.", state.max_body_bytes);
    case 414: return "The request URI is too long.";
    default: return fmt::format("HTTP error {}.", status);
  }
}

// A bounded set of labels for /metrics, whatever paths clients invent.
std::string route_label(const std::string& path) {
  for (const char* known : {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics"}) {
    if (path == known) return known;
  }
  return path.starts_with("/v1/models/") ? "/v1/models" : "other";
}

}  // namespace

void install_routes(httplib::Server& server, ServerState& state) {
  server.Post("/v1/completions", [&state](const httplib::Request& req, httplib::Response& res) {
    handle_generation(state, Endpoint::Completions, req, res);
  });
  server.Post("/v1/chat/completions", [&state](const httplib::Request& req, httplib::Response& res) {
    handle_generation(state, Endpoint::ChatCompletions, req, res);
  });
  for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
    server.Get(path, [](const httplib::Request&, httplib::Response& res) { res.status = 405; });
  }
  server.Get("/v1/models", [&state](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, models_list(state));
  });
  // /v1/models/{id} without a regex route: std::regex recursion on a long hostile path could
  // exhaust the stack.
  server.set_pre_routing_handler([&state](const httplib::Request& req, httplib::Response& res) {
    constexpr std::string_view kPrefix = "/v1/models/";
    if (req.method != "GET" || !req.path.starts_with(kPrefix)) return httplib::Server::HandlerResponse::Unhandled;
    const std::string id = req.path.substr(kPrefix.size());
    if (id != state.model_name) {
      send_error(res, ApiError{404, fmt::format("The model '{}' does not exist.", id), "invalid_request_error",
                               "model", "model_not_found"});
    } else {
      send_json(res, 200, models_list(state)["data"][0]);
    }
    return httplib::Server::HandlerResponse::Handled;
  });
  server.Get("/health", [&state](const httplib::Request&, httplib::Response& res) {
    send_json(res, state.draining ? 503 : 200, {{"status", state.draining ? "draining" : "ok"},
                                                 {"sequences_in_flight", state.scheduler.in_flight()}});
  });
  server.Get("/metrics", [&state](const httplib::Request&, httplib::Response& res) {
    res.set_content(state.metrics.render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server.set_error_handler([&state](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;  // a handler already wrote its error
    send_error(res, ApiError{res.status, status_message(res.status, state, req), "invalid_request_error", "",
                             res.status == 413 ? "request_too_large" : res.status == 404 ? "not_found" : ""});
  });
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    send_error(res, server_error(500, "Internal server error.", "internal_error"));
  });
  server.set_logger([&state](const httplib::Request& req, const httplib::Response& res) {
    state.metrics.count_request(route_label(req.path), res.status);
  });
}

}  // namespace moenav::server
