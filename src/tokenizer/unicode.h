// The little Unicode the tokenizers need: UTF-8 decoding that never fails (a stray byte is one
// "other" character, so any byte string survives byte-level BPE), and the letter / number /
// white-space classes the pre-tokenizer regexes test. The class table is generated
// (scripts/gen_unicode_tables.py -> unicode_tables.cpp) as runs, not one entry per code point.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace moenav::unicode {

enum class CharClass : uint8_t { Other, Letter, Number, Whitespace, Count };

struct CodePointRun {
  uint32_t first;
  uint32_t last;
  CharClass char_class;
};

extern const CodePointRun kCodePointRuns[];
extern const std::size_t kCodePointRunCount;

// What decode_at returns for a byte that does not start a valid UTF-8 sequence.
constexpr uint32_t kInvalidCodePoint = 0x110000;

struct DecodedChar {
  uint32_t code_point;  // kInvalidCodePoint for a malformed sequence (length is then 1)
  uint32_t length;      // bytes consumed, 1..4
};

// Decodes the character starting at text[offset] (offset < text.size()). Rejects overlong forms,
// surrogates and code points above U+10FFFF, as a strict UTF-8 decoder does.
DecodedChar decode_at(std::string_view text, std::size_t offset);

// Length of the UTF-8 sequence that starts with this byte (1 for continuation / invalid bytes).
inline std::size_t sequence_length(unsigned char first_byte) {
  if (first_byte < 0xC0) return 1;
  if (first_byte < 0xE0) return 2;
  if (first_byte < 0xF0) return 3;
  return first_byte < 0xF8 ? 4 : 1;
}

void append_utf8(std::string& out, uint32_t code_point);

CharClass char_class(uint32_t code_point);

}  // namespace moenav::unicode
