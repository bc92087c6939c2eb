// Text <-> token ids. Two vocabularies: byte-level BPE (GPT-2/Qwen style: tokenizer.json, or GGUF
// tokenizer.ggml.model = "gpt2") and SentencePiece-style BPE (GGUF "llama", as real Mixtral GGUFs
// carry). Decoding returns raw bytes; a streamed token may end inside a UTF-8 character, so
// streaming callers use Utf8Buffer-like logic to hold back incomplete sequences.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "moenav/status.h"

namespace moenav {

class GgufFile;

class Tokenizer {
 public:
  static Expected<Tokenizer> from_tokenizer_json(const std::string& path);
  static Expected<Tokenizer> from_gguf(const GgufFile& file);
  // Looks for tokenizer.json (+ tokenizer_config.json for special tokens / chat template).
  static Expected<Tokenizer> from_hf_directory(const std::string& directory);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Special tokens (added tokens such as <|endoftext|>) are matched in the text.
  std::vector<int32_t> encode(std::string_view text, bool add_bos = false) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string decode_token(int32_t id) const;  // raw bytes of one token

  int32_t vocab_size() const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  std::optional<std::string> chat_template() const;  // Jinja source, if the model has one

  // Whether the model's files ask for a BOS token in front of a prompt (tokenizer_config.json
  // add_bos_token or a post-processor that adds one; GGUF tokenizer.ggml.add_bos_token).
  bool add_bos_by_default() const;
  // The id of a vocabulary piece as the vocabulary spells it ("Ġthe", "▁the") or of an added
  // token ("<|im_end|>"); nullopt if there is none.
  std::optional<int32_t> token_id(std::string_view piece) const;
  std::string piece(int32_t id) const;  // the inverse of token_id; empty when out of range
  // Control and unknown tokens (<s>, </s>, <|endoftext|>, <unk>): callers usually hide these.
  bool is_special(int32_t id) const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moenav
