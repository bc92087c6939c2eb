#include "chat_template.h"

#include "tokenizer/tokenizer.h"

namespace moenav::server {
namespace {

// Templates differ in what they accept (some raise on a system message, some require strict
// user/assistant alternation), so a template is usable if it renders either conversation.
bool renders_sample(const ChatTemplate& chat_template, std::string* error) {
  const jinja::Value with_system = jinja::Value::parse(R"([
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi!"},
    {"role": "user", "content": "How are you?"}])");
  const jinja::Value without_system = jinja::Value::parse(R"([
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi!"},
    {"role": "user", "content": "How are you?"}])");
  auto first = chat_template.render(with_system, true);
  if (first.ok()) return true;
  auto second = chat_template.render(without_system, true);
  if (second.ok()) return true;
  *error = first.error();
  return false;
}

std::string token_text(const Tokenizer& tokenizer, std::optional<int32_t> id) {
  return id ? tokenizer.piece(*id) : std::string();
}

}  // namespace

Expected<ChatTemplate> ChatTemplate::from_source(std::string_view source, std::string bos_token,
                                                 std::string eos_token) {
  MOENAV_ASSIGN_OR_RETURN(jinja::Template compiled, jinja::Template::parse(source));
  return ChatTemplate(std::move(compiled), std::move(bos_token), std::move(eos_token));
}

ChatTemplate ChatTemplate::for_model(const Tokenizer& tokenizer, std::string* warning) {
  std::string bos = token_text(tokenizer, tokenizer.bos_id());
  std::string eos = token_text(tokenizer, tokenizer.eos_id());
  warning->clear();
  if (std::optional<std::string> source = tokenizer.chat_template()) {
    auto own = from_source(*source, bos, eos);
    std::string error = own.ok() ? std::string() : own.error();
    if (own.ok() && renders_sample(*own, &error)) return std::move(own).value();
    *warning = "the model's chat template is not usable (" + error + "); using the default (ChatML)";
  } else {
    *warning = "the model has no chat template; using the default (ChatML)";
  }
  auto fallback = from_source(kDefaultChatTemplate, std::move(bos), std::move(eos));
  ChatTemplate result = std::move(fallback).value();  // a constant the tests parse
  result.is_default_ = true;
  return result;
}

Expected<std::string> ChatTemplate::render(const jinja::Value& messages,
                                           bool add_generation_prompt) const {
  jinja::Value context = jinja::Value::object();
  context["messages"] = messages;
  context["add_generation_prompt"] = add_generation_prompt;
  context["bos_token"] = bos_token_;
  context["eos_token"] = eos_token_;
  return template_.render(context);
}

}  // namespace moenav::server
