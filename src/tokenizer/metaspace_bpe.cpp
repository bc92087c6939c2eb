// Hugging Face BPE over "▁"-escaped text (model.BPE with byte_fallback, as converted from
// SentencePiece): initial symbols are characters, rank-ordered merges join them.
#include "tokenizer/metaspace_bpe.h"

#include <cstdio>

#include "tokenizer/sentencepiece_bpe.h"
#include "tokenizer/unicode.h"

namespace moenav {

Expected<std::unique_ptr<MetaspaceBpe>> MetaspaceBpe::create(const TokenMap& vocab,
                                                             const std::vector<MergePair>& merges,
                                                             const MetaspaceBpeOptions& options) {
  std::unique_ptr<MetaspaceBpe> model(new MetaspaceBpe(options));
  model->vocab_ = vocab;
  for (int byte = 0; byte < 256; ++byte) {
    char piece[8];
    std::snprintf(piece, sizeof(piece), "<0x%02X>", byte);
    auto found = vocab.find(std::string_view(piece));
    model->byte_ids_[byte] = found == vocab.end() ? -1 : found->second;
  }
  std::string merged;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    merged.assign(left).append(right);
    auto left_id = vocab.find(left);
    auto right_id = vocab.find(right);
    auto merged_id = vocab.find(merged);
    if (left_id == vocab.end() || right_id == vocab.end() || merged_id == vocab.end()) {
      const std::string& missing =
          left_id == vocab.end() ? left : right_id == vocab.end() ? right : merged;
      return Status::errorf("merge {} ('{} {}') uses '{}', which is not in the vocabulary", rank,
                            left, right, missing);
    }
    model->merges_.add(left_id->second, right_id->second, merged_id->second);
  }
  return model;
}

void MetaspaceBpe::encode_word(std::string_view word, std::vector<int32_t>& ids) const {
  std::vector<int32_t> symbols;  // [characters] one or more ids per character, then merged
  symbols.reserve(word.size());
  bool previous_unknown = false;
  for (size_t offset = 0; offset < word.size();) {
    const size_t length = unicode::decode_at(word, offset).length;
    const std::string_view character = word.substr(offset, length);
    offset += length;
    auto found = vocab_.find(character);
    if (found != vocab_.end()) {
      symbols.push_back(found->second);
      previous_unknown = false;
      continue;
    }
    if (options_.byte_fallback) {
      bool all_bytes = true;
      for (char byte : character) all_bytes = all_bytes && byte_ids_[static_cast<uint8_t>(byte)] >= 0;
      if (all_bytes) {
        for (char byte : character) symbols.push_back(byte_ids_[static_cast<uint8_t>(byte)]);
        previous_unknown = false;
        continue;
      }
    }
    if (!options_.unknown_id) continue;  // no piece, no fallback: the character is dropped
    if (!(options_.fuse_unknown && previous_unknown)) symbols.push_back(*options_.unknown_id);
    previous_unknown = true;
  }
  merges_.apply(symbols);
  ids.insert(ids.end(), symbols.begin(), symbols.end());
}

void MetaspaceBpe::encode(std::string_view fragment, FragmentStart start,
                          std::vector<int32_t>& ids) const {
  std::string text;
  text.reserve(fragment.size() + 16);
  for (char byte : fragment) {
    if (byte == ' ') {
      text.append(kSentencePieceSpace);
    } else {
      text.push_back(byte);
    }
  }
  const bool prepend =
      options_.prepend == PrependScheme::Always ||
      (options_.prepend == PrependScheme::First && start == FragmentStart::TextStart);
  if (prepend && !text.empty() &&
      (options_.prepend_before_space || !text.starts_with(kSentencePieceSpace)))
    text.insert(0, kSentencePieceSpace);

  if (!options_.split) {
    encode_word(text, ids);
    return;
  }
  // Words start at each "▁" (Metaspace's split, MergedWithNext).
  const std::string_view view(text);
  size_t word_begin = 0;
  for (size_t offset = 1; offset <= view.size(); ++offset) {
    if (offset == view.size() || view.substr(offset).starts_with(kSentencePieceSpace)) {
      encode_word(view.substr(word_begin, offset - word_begin), ids);
      word_begin = offset;
    }
  }
}

}  // namespace moenav
