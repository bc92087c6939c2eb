// Pre-tokenization: cutting text into the "words" byte-level BPE merges within. Models define it as
// a regex (GPT-2's, or the Qwen2 / Llama-3 one); each is implemented here as a hand-written scanner
// with the same leftmost-first, greedy-with-backtracking semantics, so no regex engine is needed
// and the split is exact on any input, including invalid UTF-8 (a stray byte is an "other" char).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace moenav {

enum class PreTokenizer : uint8_t {
  None,    // the whole fragment is one word
  Gpt2,    // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  Qwen2,   // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|
           // \s*[\r\n]+|\s+(?!\S)|\s+
  Llama3,  // as Qwen2 but \p{N}{1,3}
  Count,
};

// Appends the words of `text` to `words`; the views point into `text` and cover it exactly.
void pre_tokenize(std::string_view text, PreTokenizer kind, std::vector<std::string_view>& words);

// The scanner for a tokenizer.json "Split" regex, or nullopt when the pattern is not one we know.
std::optional<PreTokenizer> pre_tokenizer_for_regex(std::string_view pattern);

// The scanner for GGUF tokenizer.ggml.pre ("gpt-2", "qwen2", "llama-bpe", ...).
std::optional<PreTokenizer> pre_tokenizer_for_gguf_name(std::string_view name);

// The regex a kind implements (for messages and tests).
std::string_view pre_tokenizer_regex(PreTokenizer kind);

}  // namespace moenav
