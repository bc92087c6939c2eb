// Byte-level BPE (GPT-2, Qwen, Llama-3): text is split into words by a pre-tokenizer regex, each
// byte of a word becomes one printable "byte-level" character (GPT-2's byte <-> unicode table, so
// vocabulary pieces are strings like "Ġthe" for " the"), and rank-ordered merges build the tokens.
// Every byte has a token, so any input encodes and decodes back exactly.
#pragma once

#include <array>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "moenav/status.h"
#include "tokenizer/bpe_merges.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/vocabulary.h"

namespace moenav {

// The byte-level character (as UTF-8) that stands for `byte` in vocabulary pieces.
std::string byte_level_char(uint8_t byte);
// Maps a byte string to its byte-level form ("\n the" -> "ĊĠthe").
std::string to_byte_level(std::string_view bytes);
// Maps a vocabulary piece back to bytes; nullopt if a character is not a byte-level character
// (added tokens such as "<|endoftext|>" are plain text and decode as themselves).
std::optional<std::string> from_byte_level(std::string_view piece);

struct ByteLevelBpeOptions {
  PreTokenizer pre_tokenizer = PreTokenizer::Gpt2;
  bool add_prefix_space = false;  // prepend ' ' to a fragment that does not start with one
  bool ignore_merges = false;     // a word that is itself a piece is one token (Llama-3)
  std::optional<int32_t> unknown_id;  // for bytes without a piece; dropped when absent
};

class ByteLevelBpe final : public SubwordModel {
 public:
  using MergePair = std::pair<std::string, std::string>;
  // `vocab` maps byte-level pieces to ids; `merges` are in priority order. Fails when a merge
  // names a piece, or produces a piece, that is not in the vocabulary.
  static Expected<std::unique_ptr<ByteLevelBpe>> create(const TokenMap& vocab,
                                                        const std::vector<MergePair>& merges,
                                                        const ByteLevelBpeOptions& options);

  void encode(std::string_view fragment, FragmentStart start,
              std::vector<int32_t>& ids) const override;

 private:
  explicit ByteLevelBpe(ByteLevelBpeOptions options) : options_(options) {}
  std::vector<int32_t> encode_word(std::string_view word) const;
  void encode_word_cached(std::string_view word, std::vector<int32_t>& ids) const;

  ByteLevelBpeOptions options_;
  std::array<int32_t, 256> byte_ids_{};  // id of each byte's one-character piece, -1 if none
  MergeTable merges_;
  TokenMap whole_words_;  // only with ignore_merges: the vocabulary, to find whole-word pieces

  // Words repeat (Zipf), so most of a long text is cache hits. Bounded: cleared when full.
  static constexpr size_t kMaxCachedWords = 1 << 17;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>>
      word_cache_;
};

}  // namespace moenav
