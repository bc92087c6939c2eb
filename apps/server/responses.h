// OpenAI response bodies: chat.completion / text_completion objects, their streaming chunks
// (Server-Sent Events: "data: {json}\n\n" ... "data: [DONE]\n\n"), usage and logprobs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "request.h"
#include "scheduler.h"

namespace moenav {
class Tokenizer;
}

namespace moenav::server {

struct ResponseMeta {
  Endpoint endpoint = Endpoint::Completions;
  std::string id;  // "chatcmpl-..." / "cmpl-..."
  int64_t created = 0;
  std::string model;
  bool logprobs = false;
};

ResponseMeta make_meta(Endpoint endpoint, const std::string& model, bool logprobs);

// Serializes without throwing: bytes that are not UTF-8 (a token can be half a character)
// become U+FFFD.
std::string dump(const nlohmann::json& value);
std::string sse_event(const nlohmann::json& value);
inline constexpr const char* kSseDone = "data: [DONE]\n\n";

nlohmann::json usage_json(int64_t prompt_tokens, int64_t completion_tokens);

// Streaming: logprobs text offsets run over the whole completion, so the caller keeps
// *text_offset between chunks. finish_reason empty: not finished yet.
nlohmann::json stream_chunk(const ResponseMeta& meta, const Tokenizer& tokenizer, const std::string& text,
                            const std::vector<TokenLogprob>& logprobs, const std::string& finish_reason,
                            int64_t* text_offset);
// The first chat chunk announces the role; the last (with include_usage) carries the usage.
nlohmann::json chat_role_chunk(const ResponseMeta& meta);
nlohmann::json usage_chunk(const ResponseMeta& meta, int64_t prompt_tokens, int64_t completion_tokens);

// Non-streaming: the whole completion at once.
nlohmann::json full_response(const ResponseMeta& meta, const Tokenizer& tokenizer, const SequenceUpdate& result);

// The OpenAI finish_reason for a scheduler finish reason.
std::string finish_reason(const SequenceUpdate& update);

}  // namespace moenav::server
