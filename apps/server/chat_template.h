// Chat messages -> prompt text, with the model's own Jinja chat template (tokenizer_config.json
// `chat_template`, GGUF `tokenizer.chat_template`) rendered by the subset in jinja.h, the way
// Hugging Face's apply_chat_template does: variables messages, add_generation_prompt,
// bos_token, eos_token.
//
// Models without a template (tiny-mixtral), or whose template this subset cannot render, get
// kDefaultChatTemplate: ChatML, the format transformers used as its default template:
//   <|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n
#pragma once

#include <string>
#include <string_view>

#include "moenav/status.h"
#include "jinja.h"

namespace moenav {
class Tokenizer;
}

namespace moenav::server {

inline constexpr std::string_view kDefaultChatTemplate =
    "{%- for message in messages -%}\n"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}\n";

class ChatTemplate {
 public:
  // The tokenizer's template when it has one that renders a sample conversation; otherwise the
  // default, with *warning saying why the model's own was not used (empty when it was).
  static ChatTemplate for_model(const Tokenizer& tokenizer, std::string* warning);
  static Expected<ChatTemplate> from_source(std::string_view source, std::string bos_token,
                                            std::string eos_token);

  // messages: [{"role": ..., "content": "..."}...]
  Expected<std::string> render(const jinja::Value& messages, bool add_generation_prompt) const;
  bool is_default() const { return is_default_; }
  const std::string& bos_token() const { return bos_token_; }

 private:
  ChatTemplate(jinja::Template compiled, std::string bos, std::string eos)
      : template_(std::move(compiled)), bos_token_(std::move(bos)), eos_token_(std::move(eos)) {}

  jinja::Template template_;
  std::string bos_token_;
  std::string eos_token_;
  bool is_default_ = false;
};

}  // namespace moenav::server
