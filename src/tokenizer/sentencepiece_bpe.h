// SentencePiece-style BPE, as GGUF "llama" vocabularies carry it (Llama 1/2, Mistral, Mixtral):
// spaces are written as "▁" (U+2581), a "▁" is put in front of the text, and pieces are merged by
// score: starting from single characters, the adjacent pair whose concatenation is the
// highest-scoring piece merges first (leftmost on ties). A character with no piece falls back to
// its UTF-8 bytes as <0xNN> byte tokens (or the unknown token when the vocabulary has none).
// There is no pre-tokenizer; merges run over the whole fragment.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/vocabulary.h"

namespace moenav {

// "▁", SentencePiece's visible space.
inline constexpr std::string_view kSentencePieceSpace = "\xE2\x96\x81";

struct SentencePieceOptions {
  bool add_space_prefix = true;  // put "▁" in front of every fragment of text
  std::optional<int32_t> unknown_id;
};

class SentencePieceBpe final : public SubwordModel {
 public:
  // pieces / scores / kinds are indexed by token id and have equal sizes.
  SentencePieceBpe(const std::vector<std::string>& pieces, const std::vector<float>& scores,
                   const std::vector<TokenKind>& kinds, const SentencePieceOptions& options);

  // Like llama.cpp, "▁" goes in front of every fragment (after added tokens too).
  void encode(std::string_view fragment, FragmentStart start,
              std::vector<int32_t>& ids) const override;

 private:
  void emit_symbol(std::string_view symbol, std::vector<int32_t>& ids) const;

  TokenMap mergeable_;          // normal and user-defined pieces: what text can become
  std::vector<float> scores_;   // [vocab]
  std::array<int32_t, 256> byte_ids_{};  // <0xNN> tokens, -1 when absent
  SentencePieceOptions options_;
};

// Text bytes a SentencePiece piece stands for: "▁" -> ' ', "<0x0A>" (a Byte token) -> '\n'.
std::string sentencepiece_piece_bytes(std::string_view piece, TokenKind kind);

}  // namespace moenav
