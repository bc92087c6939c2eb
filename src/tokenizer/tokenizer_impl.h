// Tokenizer::Impl: what every vocabulary has once loaded (per-id pieces, bytes and kinds, the added
// tokens matched in raw text, special ids, chat template) plus the subword model that encodes the
// text between added tokens. The loaders (tokenizer_json.cpp, tokenizer_gguf.cpp) fill it in.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "moenav/status.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocabulary.h"

namespace moenav {

// A token matched verbatim in the input before pre-tokenization (<|endoftext|>, <s>, [INST]).
struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool lstrip = false;       // also swallows white space to its left
  bool rstrip = false;       // also swallows white space to its right
  bool single_word = false;  // only matches when not inside a word
};

// Splits text at added tokens: leftmost match first, the longest one when several start there
// (Hugging Face's LeftmostLongest).
class AddedTokenMatcher {
 public:
  struct Piece {
    std::string_view text;
    int32_t token = -1;  // the added token's id, or -1 for text between added tokens
  };

  void add(AddedToken token);
  bool empty() const { return tokens_.empty(); }
  void split(std::string_view text, std::vector<Piece>& pieces) const;

 private:
  // Longest match starting at `offset` whose boundaries are allowed; -1 if none.
  int match_at(std::string_view text, size_t offset) const;

  std::vector<AddedToken> tokens_;
  std::array<std::vector<uint32_t>, 256> by_first_byte_;  // indexes into tokens_, longest first
};

struct Tokenizer::Impl {
  std::vector<std::string> pieces;       // [vocab] as the vocabulary spells them ("Ġthe", "▁the")
  std::vector<std::string> token_bytes;  // [vocab] the raw bytes each token decodes to
  std::vector<TokenKind> kinds;          // [vocab]
  std::vector<uint8_t> is_added;         // [vocab] 1 for tokens the matcher cuts out of text
  TokenMap piece_ids;                    // pieces and added-token contents -> id
  AddedTokenMatcher added_tokens;
  std::unique_ptr<SubwordModel> model;

  std::optional<int32_t> bos;
  std::optional<int32_t> eos;
  bool add_bos = false;  // what the model's files ask for by default
  // Where the subword model puts a "▁" in front of a fragment (SentencePiece-style models);
  // decode drops that one space again so decode(encode(text)) == text.
  enum class SpacePrefix : uint8_t { None, AtTextStart, AtEveryFragment };
  SpacePrefix space_prefix = SpacePrefix::None;
  std::optional<std::string> chat_template;

  // Sizes the per-id tables to `vocab_size` (holes decode to nothing).
  void resize(size_t vocab_size);
  // Registers an added token: matched in text, decodes to its content.
  void add_token(const AddedToken& token, TokenKind kind);
  // Checks bos / eos are in range. `source` names the file for messages.
  Status validate(const std::string& source) const;
};

}  // namespace moenav
