// OpenAI request bodies -> a validated GenerationParams, or the 4xx error OpenAI would give:
// {"error": {"message", "type": "invalid_request_error", "param", "code"}}. Unknown fields are
// ignored as OpenAI does; known fields with a wrong type or range are errors naming the field.
// Nothing in a body can make parsing throw, allocate without bound, or reach the engine unchecked.
#pragma once

#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

#include "scheduler.h"

namespace moenav {
class Engine;
}

namespace moenav::server {

class ChatTemplate;

struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // "" -> null
  std::string code;   // "" -> null
};
nlohmann::json error_body(const ApiError& error);

enum class Endpoint { Completions, ChatCompletions };

struct ParsedRequest {
  Endpoint endpoint = Endpoint::Completions;
  GenerationParams generation;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool logprobs = false;
};

struct RequestContext {
  const Engine* engine = nullptr;
  const ChatTemplate* chat_template = nullptr;
};

// Default max_tokens of /v1/completions when the client gives none (OpenAI's documented value).
inline constexpr int64_t kDefaultCompletionTokens = 16;

std::variant<ParsedRequest, ApiError> parse_request(Endpoint endpoint, std::string_view body,
                                                    const RequestContext& context);

// Offset of the first byte that is not part of valid UTF-8, or npos.
size_t invalid_utf8_offset(std::string_view text);

}  // namespace moenav::server
