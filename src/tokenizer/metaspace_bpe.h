// SentencePiece vocabularies as Hugging Face's tokenizer.json spells them (Llama 2, Mistral,
// Mixtral): spaces become "▁" (a Metaspace pre-tokenizer, or the older Prepend + Replace
// normalizers), then rank-ordered merges run over characters, and a character without a piece
// falls back to its <0xNN> byte tokens (byte_fallback) or the unknown token. Same vocabulary
// family as sentencepiece_bpe.h, but the merge order is given by the merges list, not by scores.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "moenav/status.h"
#include "tokenizer/bpe_merges.h"
#include "tokenizer/vocabulary.h"

namespace moenav {

// When "▁" is put in front of a fragment (Metaspace's prepend_scheme).
enum class PrependScheme : uint8_t { Never, First, Always, Count };

struct MetaspaceBpeOptions {
  PrependScheme prepend = PrependScheme::First;
  // The Prepend normalizer adds "▁" even to text that starts with a space; Metaspace does not.
  bool prepend_before_space = false;
  bool split = false;  // Metaspace split: each "▁" starts a new word
  bool byte_fallback = false;
  bool fuse_unknown = false;  // a run of unknown characters is one unknown token
  std::optional<int32_t> unknown_id;
};

class MetaspaceBpe final : public SubwordModel {
 public:
  using MergePair = std::pair<std::string, std::string>;
  // Fails when a merge names a piece, or produces a piece, that is not in the vocabulary.
  static Expected<std::unique_ptr<MetaspaceBpe>> create(const TokenMap& vocab,
                                                        const std::vector<MergePair>& merges,
                                                        const MetaspaceBpeOptions& options);

  void encode(std::string_view fragment, FragmentStart start,
              std::vector<int32_t>& ids) const override;

 private:
  explicit MetaspaceBpe(MetaspaceBpeOptions options) : options_(options) {}
  void encode_word(std::string_view word, std::vector<int32_t>& ids) const;

  MetaspaceBpeOptions options_;
  TokenMap vocab_;
  std::array<int32_t, 256> byte_ids_{};  // <0xNN> tokens, -1 when absent
  MergeTable merges_;
};

}  // namespace moenav
