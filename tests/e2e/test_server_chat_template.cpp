// The server's Jinja subset against the real Jinja2: tests/server/chat_template_cases.json holds
// chat templates (Mixtral, Llama 2/3, Zephyr, Gemma, ChatML and one exercising the whole subset)
// with their outputs as Hugging Face's apply_chat_template renders them. Also: the default
// template, errors instead of crashes on broken templates, and request validation.
//
// The server's sources belong to the moenav executable, not to a library the tests link
// (tests/CMakeLists.txt), so this test compiles the ones it checks itself.
#include "../../apps/server/chat_template.cpp"
#include "../../apps/server/jinja_builtins.cpp"
#include "../../apps/server/jinja_filters.cpp"
#include "../../apps/server/jinja_parse.cpp"
#include "../../apps/server/jinja_render.cpp"
#include "../../apps/server/request.cpp"

#include "test_server_harness.h"

namespace moenav::testing {
namespace {

using server::ChatTemplate;
using server::jinja::Template;
using server::jinja::Value;

TEST(ServerChatTemplate, MatchesJinja2OnRealTemplates) {
  const Value cases = Value::parse(read_file_text(source_path("tests/server/chat_template_cases.json")));
  ASSERT_GE(cases["cases"].size(), 40u);
  for (const Value& c : cases["cases"]) {
    const std::string name = c["template"].get<std::string>() + "/" + c["conversation"].get<std::string>() +
                             (c["add_generation_prompt"].get<bool>() ? "+prompt" : "");
    auto chat_template = ChatTemplate::from_source(cases["templates"][c["template"].get<std::string>()].get<std::string>(),
                                                   "<s>", "</s>");
    ASSERT_TRUE(chat_template.ok()) << name << ": " << chat_template.error();
    auto rendered = chat_template->render(cases["conversations"][c["conversation"].get<std::string>()],
                                          c["add_generation_prompt"].get<bool>());
    if (c["ok"].get<bool>()) {
      ASSERT_TRUE(rendered.ok()) << name << ": " << rendered.error();
      EXPECT_EQ(*rendered, c["output"].get<std::string>()) << name;
    } else {
      ASSERT_FALSE(rendered.ok()) << name;
      EXPECT_NE(rendered.error().find(c["output"].get<std::string>()), std::string::npos) << rendered.error();
    }
  }
}

TEST(ServerChatTemplate, DefaultIsChatMl) {
  auto engine = Engine::create(tiny_model(), EngineConfig{});
  ASSERT_TRUE(engine.ok());
  std::string warning;
  const ChatTemplate chat_template = ChatTemplate::for_model((*engine)->tokenizer(), &warning);
  EXPECT_TRUE(chat_template.is_default());
  EXPECT_NE(warning.find("no chat template"), std::string::npos);
  auto rendered = chat_template.render(Value::parse(R"([{"role": "user", "content": "Hi"}])"), true);
  ASSERT_TRUE(rendered.ok());
  EXPECT_EQ(*rendered, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ServerChatTemplate, BrokenTemplatesAreErrorsNotCrashes) {
  const char* const broken[] = {
      "{% if x %}no end", "{% for %}", "{{ ", "{{ 1 + }}", "{% endfor %}", "{% macro m() %}{% endmacro %}",
      "{{ 'unterminated }}", "{# comment", "{{ x[1:2:3:4] }}", "{% set %}", "{{ 99999999999999999999 }}",
      "{{ ((((( }}", "{% if %}{% endif %}", "{{ a.b.c( }}", "{{ [1, 2 }}", "{{ {'a': } }}"};
  for (const char* source : broken) {
    auto parsed = Template::parse(source);
    EXPECT_FALSE(parsed.ok()) << source;
  }
  const char* const failing[] = {
      "{{ raise_exception('no') }}", "{{ 1 / 0 }}", "{{ 'a' + 1 }}", "{{ unknown_function() }}",
      "{{ x | no_such_filter }}", "{{ 'a' * 100000000 }}", "{% for i in range(100000000) %}{% endfor %}",
      "{% for i in range(3000) %}{% for j in range(3000) %}{% endfor %}{% endfor %}", "{{ 9223372036854775807 * 2 }}",
      "{{ 'x'.nothing() }}", "{{ 1 is frobbable }}", "{% set y.z = 1 %}", "{{ 5 < 'a' }}"};
  for (const char* source : failing) {
    auto parsed = Template::parse(source);
    ASSERT_TRUE(parsed.ok()) << source << ": " << parsed.error();
    EXPECT_FALSE(parsed->render(Value::object()).ok()) << source;
  }
}

class ServerRequest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto engine = Engine::create(tiny_model(), EngineConfig{});
    ASSERT_TRUE(engine.ok());
    engine_ = std::move(engine).value();
    std::string warning;
    chat_template_ = std::make_unique<ChatTemplate>(ChatTemplate::for_model(engine_->tokenizer(), &warning));
  }
  std::variant<server::ParsedRequest, server::ApiError> parse(server::Endpoint endpoint, const std::string& body) {
    return server::parse_request(endpoint, body, {engine_.get(), chat_template_.get()});
  }
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<ChatTemplate> chat_template_;
};

TEST_F(ServerRequest, DefaultsAndFields) {
  auto parsed = parse(server::Endpoint::Completions, R"({"prompt": " The city", "unknown": [1, {"x": 2}]})");
  ASSERT_TRUE(std::holds_alternative<server::ParsedRequest>(parsed));
  const auto& request = std::get<server::ParsedRequest>(parsed);
  EXPECT_EQ(request.generation.max_tokens, server::kDefaultCompletionTokens);
  EXPECT_EQ(request.generation.prompt, engine_->tokenizer().encode(" The city"));
  EXPECT_FLOAT_EQ(request.generation.sampling.temperature, 1.0f);
  EXPECT_FALSE(request.stream);
  auto chat = parse(server::Endpoint::ChatCompletions,
                    R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
                        "stop": "x", "seed": 7, "temperature": 0, "top_k": 5, "stream": true,
                        "stream_options": {"include_usage": true}, "logprobs": true, "top_logprobs": 3})");
  ASSERT_TRUE(std::holds_alternative<server::ParsedRequest>(chat));
  const auto& chat_request = std::get<server::ParsedRequest>(chat);
  EXPECT_EQ(chat_request.generation.prompt,
            engine_->tokenizer().encode("<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\n"));
  EXPECT_EQ(chat_request.generation.max_tokens, engine_->context_length() - static_cast<int64_t>(chat_request.generation.prompt.size()));
  EXPECT_EQ(chat_request.generation.stop, std::vector<std::string>{"x"});
  EXPECT_EQ(chat_request.generation.sampling.seed, 7u);
  EXPECT_EQ(chat_request.generation.sampling.top_k, 5);
  EXPECT_EQ(chat_request.generation.top_logprobs, 3);
  EXPECT_TRUE(chat_request.stream && chat_request.include_usage && chat_request.logprobs);
}

TEST_F(ServerRequest, ErrorsNameTheParameter) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"prompt": "x", "max_tokens": 0})", "max_tokens"},
      {R"({"prompt": "x", "max_tokens": 2.0})", "max_tokens"},
      {R"({"prompt": "x", "temperature": 3})", "temperature"},
      {R"({"prompt": "x", "stop": ["a", 1]})", "stop"},
      {R"({"prompt": "x", "max_tokens": 4000})", "prompt"},
      {R"({"prompt": [5, 99999]})", "prompt"},
  };
  for (const auto& [body, param] : cases) {
    auto parsed = parse(server::Endpoint::Completions, body);
    ASSERT_TRUE(std::holds_alternative<server::ApiError>(parsed)) << body;
    const auto& error = std::get<server::ApiError>(parsed);
    EXPECT_EQ(error.status, 400);
    EXPECT_EQ(error.param, param) << body;
    EXPECT_EQ(error.type, "invalid_request_error");
  }
  EXPECT_EQ(server::invalid_utf8_offset("ok \xc3\xa9 \xf0\x9f\x98\x80"), std::string_view::npos);
  EXPECT_EQ(server::invalid_utf8_offset("ab\xc0\xaf"), 2u);
  EXPECT_EQ(server::invalid_utf8_offset("\xed\xa0\x80"), 0u);
}

}  // namespace
}  // namespace moenav::testing
