// UTF-8 decoding/encoding and the character-class lookup over the generated run table.
#include "tokenizer/unicode.h"

#include <algorithm>
#include <array>

namespace moenav::unicode {

namespace {

// ASCII is most of what a tokenizer sees; answer it from a flat table.
std::array<CharClass, 128> make_ascii_classes() {
  std::array<CharClass, 128> classes{};
  for (std::size_t run = 0; run < kCodePointRunCount; ++run) {
    const CodePointRun& entry = kCodePointRuns[run];
    for (uint32_t code_point = entry.first; code_point <= entry.last && code_point < 128; ++code_point)
      classes[code_point] = entry.char_class;
  }
  return classes;
}

bool is_continuation(unsigned char byte) { return (byte & 0xC0) == 0x80; }

}  // namespace

DecodedChar decode_at(std::string_view text, std::size_t offset) {
  const auto byte = [&](std::size_t index) { return static_cast<unsigned char>(text[index]); };
  const unsigned char first = byte(offset);
  if (first < 0x80) return {first, 1};
  const std::size_t length = sequence_length(first);
  if (length == 1 || offset + length > text.size()) return {kInvalidCodePoint, 1};
  uint32_t code_point = first & (0xFF >> (length + 1));
  for (std::size_t index = 1; index < length; ++index) {
    if (!is_continuation(byte(offset + index))) return {kInvalidCodePoint, 1};
    code_point = (code_point << 6) | (byte(offset + index) & 0x3F);
  }
  constexpr uint32_t kMinimum[5] = {0, 0, 0x80, 0x800, 0x10000};
  const bool surrogate = code_point >= 0xD800 && code_point <= 0xDFFF;
  if (code_point < kMinimum[length] || surrogate || code_point > 0x10FFFF)
    return {kInvalidCodePoint, 1};
  return {code_point, static_cast<uint32_t>(length)};
}

void append_utf8(std::string& out, uint32_t code_point) {
  if (code_point < 0x80) {
    out.push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

CharClass char_class(uint32_t code_point) {
  static const std::array<CharClass, 128> kAsciiClasses = make_ascii_classes();
  if (code_point < 128) return kAsciiClasses[code_point];
  const CodePointRun* end = kCodePointRuns + kCodePointRunCount;
  // First run whose last code point is >= code_point.
  const CodePointRun* run = std::lower_bound(
      kCodePointRuns, end, code_point,
      [](const CodePointRun& entry, uint32_t value) { return entry.last < value; });
  if (run == end || run->first > code_point) return CharClass::Other;
  return run->char_class;
}

}  // namespace moenav::unicode
