// Hand-written scanners for the pre-tokenizer regexes. Each one tries the regex's alternatives in
// order at the current position and takes the first that matches, with the length a backtracking
// engine would settle on; the comments name the alternative each branch implements.
#include "tokenizer/pretokenizer.h"

#include <array>
#include <string>

#include "tokenizer/unicode.h"

namespace moenav {

namespace {

using unicode::CharClass;

constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::array<std::string_view, static_cast<size_t>(PreTokenizer::Count)> kRegexes = {
    "", kGpt2Regex, kQwen2Regex, kLlama3Regex};

// The text decoded once: scanners look ahead by characters, not bytes.
class CharStream {
 public:
  explicit CharStream(std::string_view text) {
    offsets_.reserve(text.size() + 1);
    code_points_.reserve(text.size());
    classes_.reserve(text.size());
    for (size_t offset = 0; offset < text.size();) {
      const unicode::DecodedChar decoded = unicode::decode_at(text, offset);
      offsets_.push_back(static_cast<uint32_t>(offset));
      code_points_.push_back(decoded.code_point);
      classes_.push_back(unicode::char_class(decoded.code_point));
      offset += decoded.length;
    }
    offsets_.push_back(static_cast<uint32_t>(text.size()));
  }

  size_t size() const { return code_points_.size(); }
  size_t offset(size_t index) const { return offsets_[index]; }
  uint32_t code_point(size_t index) const { return index < size() ? code_points_[index] : 0; }
  bool is(size_t index, CharClass wanted) const { return index < size() && classes_[index] == wanted; }
  bool letter(size_t index) const { return is(index, CharClass::Letter); }
  bool number(size_t index) const { return is(index, CharClass::Number); }
  bool space(size_t index) const { return is(index, CharClass::Whitespace); }
  bool other(size_t index) const { return is(index, CharClass::Other); }  // [^\s\p{L}\p{N}]
  bool newline(size_t index) const {
    return index < size() && (code_points_[index] == '\r' || code_points_[index] == '\n');
  }

  // First index at or after `index` whose class is not `skipped`.
  size_t skip(size_t index, CharClass skipped) const {
    while (is(index, skipped)) ++index;
    return index;
  }

 private:
  std::vector<uint32_t> offsets_;  // [chars + 1] byte offset of each char, then text size
  std::vector<uint32_t> code_points_;
  std::vector<CharClass> classes_;
};

uint32_t ascii_lower(uint32_t code_point) {
  return code_point >= 'A' && code_point <= 'Z' ? code_point + ('a' - 'A') : code_point;
}

// 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive (ASCII folding only). Returns the match
// length in chars, 0 when none.
size_t match_contraction(const CharStream& chars, size_t index, bool ignore_case) {
  if (chars.code_point(index) != '\'') return 0;
  const auto at = [&](size_t position) {
    const uint32_t code_point = chars.code_point(position);
    return ignore_case ? ascii_lower(code_point) : code_point;
  };
  const uint32_t first = at(index + 1);
  if (first == 's' || first == 't' || first == 'm' || first == 'd') return 2;
  const uint32_t second = at(index + 2);
  if ((first == 'r' && second == 'e') || (first == 'v' && second == 'e') ||
      (first == 'l' && second == 'l'))
    return 3;
  return 0;
}

// \s+(?!\S) then \s+, at a white-space char: the run minus its last char when a non-space
// follows (that char then leads the next word), else the whole run.
size_t match_trailing_space(const CharStream& chars, size_t index) {
  const size_t run_end = chars.skip(index, CharClass::Whitespace);
  if (run_end == chars.size()) return run_end - index;
  return run_end - index >= 2 ? run_end - index - 1 : 1;
}

// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t match_gpt2(const CharStream& chars, size_t index) {
  if (size_t length = match_contraction(chars, index, /*ignore_case=*/false)) return length;
  const size_t body = chars.code_point(index) == ' ' ? index + 1 : index;  // the optional ' '
  for (CharClass wanted : {CharClass::Letter, CharClass::Number, CharClass::Other}) {
    if (chars.is(body, wanted)) return chars.skip(body, wanted) - index;
    if (chars.is(index, wanted)) return chars.skip(index, wanted) - index;
  }
  return match_trailing_space(chars, index);
}

// Qwen2 / Llama-3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
//                  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
size_t match_qwen2(const CharStream& chars, size_t index, size_t max_digits) {
  if (size_t length = match_contraction(chars, index, /*ignore_case=*/true)) return length;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  const bool can_lead = !chars.newline(index) && !chars.letter(index) && !chars.number(index);
  if (can_lead && chars.letter(index + 1)) return chars.skip(index + 1, CharClass::Letter) - index;
  if (chars.letter(index)) return chars.skip(index, CharClass::Letter) - index;
  // \p{N}{1,max_digits}
  if (chars.number(index)) {
    size_t end = index + 1;
    while (end - index < max_digits && chars.number(end)) ++end;
    return end - index;
  }
  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  const size_t body = chars.code_point(index) == ' ' && chars.other(index + 1) ? index + 1 : index;
  if (chars.other(body)) {
    size_t end = chars.skip(body, CharClass::Other);
    while (chars.newline(end)) ++end;
    return end - index;
  }
  // Only white space is left. \s*[\r\n]+: up to and including the run's last newline.
  const size_t run_end = chars.skip(index, CharClass::Whitespace);
  for (size_t last = run_end; last > index; --last) {
    if (chars.newline(last - 1)) return last - index;
  }
  return match_trailing_space(chars, index);
}

}  // namespace

void pre_tokenize(std::string_view text, PreTokenizer kind, std::vector<std::string_view>& words) {
  if (text.empty()) return;
  if (kind == PreTokenizer::None) {
    words.push_back(text);
    return;
  }
  const CharStream chars(text);
  for (size_t index = 0; index < chars.size();) {
    size_t length = 0;
    switch (kind) {
      case PreTokenizer::Gpt2: length = match_gpt2(chars, index); break;
      case PreTokenizer::Qwen2: length = match_qwen2(chars, index, 1); break;
      case PreTokenizer::Llama3: length = match_qwen2(chars, index, 3); break;
      case PreTokenizer::None:
      case PreTokenizer::Count: length = chars.size() - index; break;
    }
    const size_t begin = chars.offset(index);
    words.push_back(text.substr(begin, chars.offset(index + length) - begin));
    index += length;
  }
}

std::optional<PreTokenizer> pre_tokenizer_for_regex(std::string_view pattern) {
  for (size_t kind = 1; kind < kRegexes.size(); ++kind) {
    if (pattern == kRegexes[kind]) return static_cast<PreTokenizer>(kind);
  }
  return std::nullopt;
}

std::optional<PreTokenizer> pre_tokenizer_for_gguf_name(std::string_view name) {
  // llama.cpp's names (llama-vocab.cpp) for vocabularies whose split is one of ours.
  if (name == "gpt-2" || name == "gpt2") return PreTokenizer::Gpt2;
  if (name == "qwen2" || name == "deepseek-r1-qwen") return PreTokenizer::Qwen2;
  if (name == "llama3" || name == "llama-v3" || name == "llama-bpe" || name == "falcon3")
    return PreTokenizer::Llama3;
  return std::nullopt;
}

std::string_view pre_tokenizer_regex(PreTokenizer kind) {
  return kRegexes[static_cast<size_t>(kind)];
}

}  // namespace moenav
