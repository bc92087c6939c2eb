#include "responses.h"

#include <atomic>
#include <chrono>
#include <random>

#include <fmt/format.h>

#include "tokenizer/tokenizer.h"

namespace moenav::server {
namespace {

using Json = nlohmann::json;

std::string random_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 generator(std::random_device{}());
  return fmt::format("{}{:016x}{:04x}", prefix, generator(), counter++ & 0xFFFF);
}

Json token_bytes(const std::string& text) {
  Json bytes = Json::array();
  for (unsigned char c : text) bytes.push_back(c);
  return bytes;
}

// Chat: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}], "refusal": null}
Json chat_logprobs(const Tokenizer& tokenizer, const std::vector<TokenLogprob>& entries) {
  Json content = Json::array();
  for (const TokenLogprob& entry : entries) {
    const std::string text = tokenizer.decode_token(entry.token);
    Json top = Json::array();
    for (const auto& [token, logprob] : entry.top) {
      const std::string alternative = tokenizer.decode_token(token);
      top.push_back({{"token", alternative}, {"logprob", logprob}, {"bytes", token_bytes(alternative)}});
    }
    content.push_back({{"token", text}, {"logprob", entry.logprob}, {"bytes", token_bytes(text)}, {"top_logprobs", top}});
  }
  return {{"content", content}, {"refusal", nullptr}};
}

// Completions: {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}
Json completion_logprobs(const Tokenizer& tokenizer, const std::vector<TokenLogprob>& entries, int64_t* text_offset) {
  Json tokens = Json::array(), logprobs = Json::array(), tops = Json::array(), offsets = Json::array();
  for (const TokenLogprob& entry : entries) {
    const std::string text = tokenizer.decode_token(entry.token);
    tokens.push_back(text);
    logprobs.push_back(entry.logprob);
    Json top = Json::object();
    for (const auto& [token, logprob] : entry.top) top[tokenizer.decode_token(token)] = logprob;
    tops.push_back(top);
    offsets.push_back(*text_offset);
    *text_offset += static_cast<int64_t>(text.size());
  }
  return {{"tokens", tokens}, {"token_logprobs", logprobs}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

Json envelope(const ResponseMeta& meta, const char* object) {
  return {{"id", meta.id}, {"object", object}, {"created", meta.created}, {"model", meta.model},
          {"system_fingerprint", nullptr}};
}

Json reason_or_null(const std::string& reason) { return reason.empty() ? Json(nullptr) : Json(reason); }

}  // namespace

ResponseMeta make_meta(Endpoint endpoint, const std::string& model, bool logprobs) {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return {endpoint, random_id(endpoint == Endpoint::ChatCompletions ? "chatcmpl-" : "cmpl-"),
          std::chrono::duration_cast<std::chrono::seconds>(now).count(), model, logprobs};
}

std::string dump(const Json& value) { return value.dump(-1, ' ', false, Json::error_handler_t::replace); }

std::string sse_event(const Json& value) { return "data: " + dump(value) + "\n\n"; }

Json usage_json(int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

std::string finish_reason(const SequenceUpdate& update) {
  return update.finish_reason == "stop" || update.finish_reason == "length" ? update.finish_reason : "";
}

Json stream_chunk(const ResponseMeta& meta, const Tokenizer& tokenizer, const std::string& text,
                  const std::vector<TokenLogprob>& logprobs, const std::string& finish_reason,
                  int64_t* text_offset) {
  const bool chat = meta.endpoint == Endpoint::ChatCompletions;
  Json chunk = envelope(meta, chat ? "chat.completion.chunk" : "text_completion");
  Json choice = {{"index", 0}};
  if (chat) {
    choice["delta"] = text.empty() ? Json::object() : Json{{"content", text}};
    choice["logprobs"] = meta.logprobs && !logprobs.empty() ? chat_logprobs(tokenizer, logprobs) : Json(nullptr);
  } else {
    choice["text"] = text;
    choice["logprobs"] = meta.logprobs ? completion_logprobs(tokenizer, logprobs, text_offset) : Json(nullptr);
  }
  choice["finish_reason"] = reason_or_null(finish_reason);
  chunk["choices"] = Json::array({choice});
  return chunk;
}

Json chat_role_chunk(const ResponseMeta& meta) {
  Json chunk = envelope(meta, "chat.completion.chunk");
  chunk["choices"] = Json::array({{{"index", 0},
                                   {"delta", {{"role", "assistant"}, {"content", ""}}},
                                   {"logprobs", nullptr},
                                   {"finish_reason", nullptr}}});
  return chunk;
}

Json usage_chunk(const ResponseMeta& meta, int64_t prompt_tokens, int64_t completion_tokens) {
  const bool chat = meta.endpoint == Endpoint::ChatCompletions;
  Json chunk = envelope(meta, chat ? "chat.completion.chunk" : "text_completion");
  chunk["choices"] = Json::array();
  chunk["usage"] = usage_json(prompt_tokens, completion_tokens);
  return chunk;
}

Json full_response(const ResponseMeta& meta, const Tokenizer& tokenizer, const SequenceUpdate& result) {
  const bool chat = meta.endpoint == Endpoint::ChatCompletions;
  Json response = envelope(meta, chat ? "chat.completion" : "text_completion");
  Json choice = {{"index", 0}};
  int64_t text_offset = 0;
  if (chat) {
    choice["message"] = {{"role", "assistant"}, {"content", result.text}, {"refusal", nullptr}};
    choice["logprobs"] = meta.logprobs ? chat_logprobs(tokenizer, result.logprobs) : Json(nullptr);
  } else {
    choice["text"] = result.text;
    choice["logprobs"] = meta.logprobs ? completion_logprobs(tokenizer, result.logprobs, &text_offset) : Json(nullptr);
  }
  choice["finish_reason"] = reason_or_null(finish_reason(result));
  response["choices"] = Json::array({choice});
  response["usage"] = usage_json(result.prompt_tokens, result.completion_tokens);
  return response;
}

}  // namespace moenav::server
