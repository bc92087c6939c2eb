// Types the tokenizer's parts share: token kinds (GGUF's token_type, which tokenizer.json's added
// tokens map onto), a string -> id map that can be probed with string_views, and the interface of
// the subword models (byte-level BPE, SentencePiece BPE) that turn plain text into ids.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace moenav {

// GGUF tokenizer.ggml.token_type is this value + 1 (llama.cpp's LLAMA_TOKEN_TYPE_*).
enum class TokenKind : uint8_t { Normal, Unknown, Control, UserDefined, Unused, Byte, Count };

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// Where a fragment of plain text sits: SentencePiece-style models put their word-boundary mark
// in front of a fragment that starts the text and, depending on the model, after added tokens.
enum class FragmentStart : uint8_t { TextStart, AfterAddedToken };

// Encodes text that holds no added tokens (they are cut out before). Implementations are
// immutable after construction apart from internal caches, and safe to call from many threads.
class SubwordModel {
 public:
  virtual ~SubwordModel() = default;
  virtual void encode(std::string_view fragment, FragmentStart start,
                      std::vector<int32_t>& ids) const = 0;
};

}  // namespace moenav
