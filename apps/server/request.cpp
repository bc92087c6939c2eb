#include "request.h"

#include <algorithm>
#include <limits>
#include <random>
#include <optional>

#include <fmt/format.h>

#include "moenav/engine.h"
#include "chat_template.h"
#include "tokenizer/tokenizer.h"

namespace moenav::server {
namespace {

using Json = jinja::Value;  // ordered, so messages reach the chat template as sent
using MaybeError = std::optional<ApiError>;

constexpr size_t kMaxStops = 4;            // OpenAI's limit
constexpr size_t kMaxStopBytes = 1024;
constexpr int kMaxCompletionLogprobs = 5;  // OpenAI's limits
constexpr int kMaxTopLogprobs = 20;
constexpr int kMaxNesting = 64;  // JSON depth; deeper bodies are hostile, not chat requests

// Depth of [ and { outside strings. Checked before parsing so a body of a million '[' never
// becomes a million nested values (recursion in destruction and in the chat template).
int nesting_depth(std::string_view body) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

ApiError invalid(std::string param, std::string message, std::string code = {}) {
  return ApiError{400, std::move(message), "invalid_request_error", std::move(param), std::move(code)};
}

std::string type_name(const Json& value) {
  if (value.is_number_float()) return "a decimal number";
  if (value.is_number()) return "an integer";
  if (value.is_string()) return "a string";
  if (value.is_boolean()) return "a boolean";
  if (value.is_array()) return "an array";
  if (value.is_object()) return "an object";
  return "null";
}

ApiError wrong_type(const std::string& key, const char* expected, const Json& value) {
  return invalid(key, fmt::format("Invalid type for '{}': expected {}, but got {} instead.", key,
                                  expected, type_name(value)), "invalid_type");
}

// A present, non-null field (OpenAI treats null as "use the default").
const Json* field(const Json& body, const char* key) {
  auto found = body.find(key);
  return found == body.end() || found->is_null() ? nullptr : &*found;
}

MaybeError read_number(const Json& body, const char* key, double min, double max, std::optional<double>* out) {
  const Json* value = field(body, key);
  if (!value) return {};
  if (!value->is_number()) return wrong_type(key, "a number", *value);
  const double number = value->get<double>();
  if (!(number >= min && number <= max)) {
    return invalid(key, fmt::format("{} must be between {} and {}; got {}.", key, min, max, number), "invalid_value");
  }
  *out = number;
  return {};
}

MaybeError read_integer(const Json& body, const char* key, int64_t min, int64_t max, std::optional<int64_t>* out) {
  const Json* value = field(body, key);
  if (!value) return {};
  if (!value->is_number_integer()) return wrong_type(key, "an integer", *value);
  const bool too_big = value->is_number_unsigned() && value->get<uint64_t>() > static_cast<uint64_t>(max);
  const int64_t number = too_big ? max : value->get<int64_t>();
  if (too_big || number < min || number > max) {
    return invalid(key, fmt::format("{} must be between {} and {}; got {}.", key, min, max, value->dump()), "invalid_value");
  }
  *out = number;
  return {};
}

MaybeError read_bool(const Json& body, const char* key, bool* out) {
  const Json* value = field(body, key);
  if (!value) return {};
  if (!value->is_boolean()) return wrong_type(key, "a boolean", *value);
  *out = value->get<bool>();
  return {};
}

MaybeError read_seed(const Json& body, std::optional<uint64_t>* seed) {
  const Json* value = field(body, "seed");
  if (!value) return {};
  if (!value->is_number_integer()) return wrong_type("seed", "an integer", *value);
  *seed = value->is_number_unsigned() ? value->get<uint64_t>() : static_cast<uint64_t>(value->get<int64_t>());
  return {};
}

MaybeError read_stop(const Json& body, std::vector<std::string>* stops) {
  const Json* value = field(body, "stop");
  if (!value) return {};
  std::vector<Json> items;
  if (value->is_string()) items.push_back(*value);
  else if (value->is_array()) items.assign(value->begin(), value->end());
  else return wrong_type("stop", "a string or an array of strings", *value);
  if (items.size() > kMaxStops) return invalid("stop", fmt::format("stop may have at most {} sequences.", kMaxStops), "invalid_value");
  for (const Json& item : items) {
    if (!item.is_string()) return wrong_type("stop", "a string or an array of strings", item);
    if (item.get_ref<const std::string&>().size() > kMaxStopBytes) {
      return invalid("stop", fmt::format("each stop sequence may have at most {} bytes.", kMaxStopBytes), "invalid_value");
    }
    stops->push_back(item.get<std::string>());
  }
  return {};
}

MaybeError read_sampling(const Json& body, GenerationParams& params) {
  std::optional<double> temperature, top_p;
  std::optional<int64_t> top_k;
  std::optional<uint64_t> seed;
  if (auto error = read_number(body, "temperature", 0.0, 2.0, &temperature)) return error;
  if (auto error = read_number(body, "top_p", 0.0, 1.0, &top_p)) return error;
  if (auto error = read_integer(body, "top_k", -1, std::numeric_limits<int32_t>::max(), &top_k)) return error;
  if (auto error = read_seed(body, &seed)) return error;
  // Without a seed, sampled outputs differ between calls, as OpenAI's do.
  params.sampling.temperature = static_cast<float>(temperature.value_or(1.0));
  params.sampling.top_p = static_cast<float>(top_p.value_or(1.0));
  params.sampling.top_k = top_k && *top_k > 0 ? static_cast<int>(*top_k) : 0;
  params.sampling.seed = seed ? *seed : std::random_device{}();
  return read_stop(body, &params.stop);
}

MaybeError read_unsupported(const Json& body, Endpoint endpoint) {
  std::optional<int64_t> n;
  if (auto error = read_integer(body, "n", 1, 128, &n)) return error;
  if (n && *n != 1) return invalid("n", "Only n = 1 is supported.", "unsupported_value");
  if (endpoint == Endpoint::Completions) {
    bool echo = false;
    if (auto error = read_bool(body, "echo", &echo)) return error;
    if (echo) return invalid("echo", "echo is not supported.", "unsupported_value");
    if (field(body, "suffix")) return invalid("suffix", "suffix is not supported.", "unsupported_value");
    std::optional<int64_t> best_of;
    if (auto error = read_integer(body, "best_of", 1, 128, &best_of)) return error;
    if (best_of && *best_of != 1) return invalid("best_of", "Only best_of = 1 is supported.", "unsupported_value");
  }
  return {};
}

MaybeError read_logprobs(const Json& body, Endpoint endpoint, ParsedRequest& request) {
  std::optional<int64_t> count;
  if (endpoint == Endpoint::Completions) {
    if (auto error = read_integer(body, "logprobs", 0, kMaxCompletionLogprobs, &count)) return error;
    request.logprobs = count.has_value();
  } else {
    if (auto error = read_bool(body, "logprobs", &request.logprobs)) return error;
    if (auto error = read_integer(body, "top_logprobs", 0, kMaxTopLogprobs, &count)) return error;
    if (count && !request.logprobs) {
      return invalid("top_logprobs", "top_logprobs requires logprobs to be true.", "invalid_value");
    }
  }
  request.generation.top_logprobs = request.logprobs ? static_cast<int>(count.value_or(0)) : -1;
  return {};
}

// "content": a string, null, or an array of {"type": "text", "text": ...} parts.
MaybeError message_content(const Json& message, size_t index, std::string* content) {
  const std::string param = fmt::format("messages[{}].content", index);
  auto found = message.find("content");
  if (found == message.end() || found->is_null()) return {};
  if (found->is_string()) {
    *content = found->get<std::string>();
    return {};
  }
  if (!found->is_array()) return wrong_type(param, "a string or an array of content parts", *found);
  for (const Json& part : *found) {
    auto type = part.is_object() ? part.find("type") : part.end();
    auto text = part.is_object() ? part.find("text") : part.end();
    if (type == part.end() || !type->is_string() || *type != "text" || text == part.end() || !text->is_string()) {
      return invalid(param, "Only text content parts ({\"type\": \"text\", \"text\": ...}) are supported.", "invalid_value");
    }
    *content += text->get<std::string>();
  }
  return {};
}

MaybeError read_messages(const Json& body, Json* messages) {
  const Json* value = field(body, "messages");
  if (!value) return invalid("messages", "Missing required parameter: 'messages'.", "missing_required_parameter");
  if (!value->is_array()) return wrong_type("messages", "an array", *value);
  if (value->empty()) return invalid("messages", "messages must not be empty.", "invalid_value");
  static const char* const kRoles[] = {"system", "developer", "user", "assistant", "tool", "function"};
  *messages = Json::array();
  for (size_t i = 0; i < value->size(); ++i) {
    const Json& message = (*value)[i];
    if (!message.is_object()) return wrong_type(fmt::format("messages[{}]", i), "an object", message);
    auto role = message.find("role");
    if (role == message.end() || !role->is_string() ||
        std::none_of(std::begin(kRoles), std::end(kRoles), [&](const char* r) { return *role == r; })) {
      return invalid(fmt::format("messages[{}].role", i),
                     "role must be one of system, developer, user, assistant, tool, function.", "invalid_value");
    }
    std::string content;
    if (auto error = message_content(message, i, &content)) return error;
    Json normalized = message;  // other fields (name, tool_calls) stay visible to the template
    normalized["content"] = content;
    messages->push_back(std::move(normalized));
  }
  return {};
}

MaybeError chat_prompt(const Json& body, const RequestContext& context, std::vector<int32_t>* prompt) {
  Json messages;
  if (auto error = read_messages(body, &messages)) return error;
  auto text = context.chat_template->render(messages, true);
  if (!text.ok()) return invalid("messages", "The chat template rejected these messages: " + text.error(), "invalid_value");
  const Tokenizer& tokenizer = context.engine->tokenizer();
  // Templates usually write the BOS token themselves; add it only where the model wants one and
  // the template did not.
  const std::string& bos = context.chat_template->bos_token();
  const bool add_bos = tokenizer.add_bos_by_default() && (bos.empty() || !text->starts_with(bos));
  *prompt = tokenizer.encode(*text, add_bos);
  return {};
}

MaybeError completion_prompt(const Json& body, const RequestContext& context, std::vector<int32_t>* prompt) {
  const Json* value = field(body, "prompt");
  if (!value) return invalid("prompt", "Missing required parameter: 'prompt'.", "missing_required_parameter");
  const Json* single = value;
  if (value->is_array() && value->size() == 1 && ((*value)[0].is_string() || (*value)[0].is_array())) single = &(*value)[0];
  const Tokenizer& tokenizer = context.engine->tokenizer();
  if (single->is_string()) {
    *prompt = tokenizer.encode(single->get_ref<const std::string&>(), tokenizer.add_bos_by_default());
    return {};
  }
  if (!single->is_array()) return wrong_type("prompt", "a string or an array of token ids", *value);
  const int64_t vocab = context.engine->vocab_size();
  for (const Json& token : *single) {
    if (!token.is_number_integer()) {
      return invalid("prompt", "Only one prompt per request is supported: a string or an array of token ids.", "invalid_value");
    }
    const bool in_range = token.is_number_unsigned() ? token.get<uint64_t>() < static_cast<uint64_t>(vocab)
                                                     : token.get<int64_t>() >= 0 && token.get<int64_t>() < vocab;
    if (!in_range) return invalid("prompt", fmt::format("token id {} is outside the vocabulary [0, {}).", token.dump(), vocab), "invalid_value");
    prompt->push_back(static_cast<int32_t>(token.get<int64_t>()));
  }
  return {};
}

// prompt + max_tokens must fit the context; max_tokens defaults to what fits.
MaybeError read_max_tokens(const Json& body, Endpoint endpoint, int64_t context, ParsedRequest& request) {
  const int64_t prompt_tokens = static_cast<int64_t>(request.generation.prompt.size());
  const char* prompt_param = endpoint == Endpoint::ChatCompletions ? "messages" : "prompt";
  if (prompt_tokens == 0) return invalid(prompt_param, "The prompt is empty.", "invalid_value");
  std::optional<int64_t> max_tokens;
  const char* key = endpoint == Endpoint::ChatCompletions && field(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  if (auto error = read_integer(body, key, 1, std::numeric_limits<int64_t>::max(), &max_tokens)) return error;
  const int64_t room = context - prompt_tokens;
  if ((max_tokens && *max_tokens > room) || room < 1) {
    const int64_t asked = max_tokens.value_or(1);
    return invalid(prompt_param,
                   fmt::format("This model's maximum context length is {} tokens. However, you requested {} tokens "
                               "({} in the {}, {} in the completion). Please reduce the length of the {} or completion.",
                               context, prompt_tokens > std::numeric_limits<int64_t>::max() - asked ? std::numeric_limits<int64_t>::max() : prompt_tokens + asked,
                               prompt_tokens, prompt_param, asked, prompt_param),
                   "context_length_exceeded");
  }
  const int64_t fallback = endpoint == Endpoint::Completions ? std::min(kDefaultCompletionTokens, room) : room;
  request.generation.max_tokens = max_tokens.value_or(fallback);
  return {};
}

MaybeError read_stream(const Json& body, ParsedRequest& request) {
  if (auto error = read_bool(body, "stream", &request.stream)) return error;
  const Json* options = field(body, "stream_options");
  if (!options) return {};
  if (!options->is_object()) return wrong_type("stream_options", "an object", *options);
  return read_bool(*options, "include_usage", &request.include_usage);
}

MaybeError parse_fields(const Json& body, Endpoint endpoint, const RequestContext& context, ParsedRequest& request) {
  if (const Json* model = field(body, "model"); model && !model->is_string()) return wrong_type("model", "a string", *model);
  if (auto error = read_unsupported(body, endpoint)) return error;
  if (auto error = read_sampling(body, request.generation)) return error;
  if (auto error = read_logprobs(body, endpoint, request)) return error;
  if (auto error = read_stream(body, request)) return error;
  bool ignore_eos = false;  // an extension (vLLM's name) for fixed-length benchmarks
  if (auto error = read_bool(body, "ignore_eos", &ignore_eos)) return error;
  request.generation.stop_at_eos = !ignore_eos;
  auto error = endpoint == Endpoint::ChatCompletions ? chat_prompt(body, context, &request.generation.prompt)
                                                     : completion_prompt(body, context, &request.generation.prompt);
  if (error) return error;
  return read_max_tokens(body, endpoint, context.engine->context_length(), request);
}

}  // namespace

nlohmann::json error_body(const ApiError& error) {
  nlohmann::json inner = {{"message", error.message}, {"type", error.type}, {"param", nullptr}, {"code", nullptr}};
  if (!error.param.empty()) inner["param"] = error.param;
  if (!error.code.empty()) inner["code"] = error.code;
  return {{"error", inner}};
}

size_t invalid_utf8_offset(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    size_t length = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (length == 0 || i + length > text.size()) return i;
    uint32_t code = length == 1 ? c : c & (0x7F >> length);
    for (size_t k = 1; k < length; ++k) {
      const unsigned char next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return i;
      code = (code << 6) | (next & 0x3F);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8.
    static const uint32_t kMinimum[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < kMinimum[length] || (code >= 0xD800 && code <= 0xDFFF) || code > 0x10FFFF) return i;
    i += length;
  }
  return std::string_view::npos;
}

std::variant<ParsedRequest, ApiError> parse_request(Endpoint endpoint, std::string_view body,
                                                    const RequestContext& context) {
  if (const size_t bad = invalid_utf8_offset(body); bad != std::string_view::npos) {
    return invalid("", fmt::format("The request body is not valid UTF-8 (byte {}).", bad), "invalid_encoding");
  }
  if (nesting_depth(body) > kMaxNesting) {
    return invalid("", fmt::format("The JSON body is nested more than {} levels deep.", kMaxNesting), "invalid_json");
  }
  Json document = Json::parse(body, nullptr, false);
  if (document.is_discarded()) {
    return invalid("", "We could not parse the JSON body of your request. The API expects a JSON object.", "invalid_json");
  }
  if (!document.is_object()) return invalid("", "The request body must be a JSON object.", "invalid_json");
  ParsedRequest request;
  request.endpoint = endpoint;
  if (auto error = parse_fields(document, endpoint, context, request)) return *error;
  return request;
}

}  // namespace moenav::server
