// Byte-level BPE: GPT-2's byte <-> character table, building the merge table from piece pairs,
// and per-word encoding with a word cache.
#include "tokenizer/byte_level_bpe.h"

#include "tokenizer/unicode.h"

namespace moenav {

namespace {

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves; the other 68 bytes
// (controls, space, DEL, NBSP, soft hyphen) take the code points 256, 257, ... in byte order.
struct ByteLevelTable {
  std::array<uint32_t, 256> code_point_of_byte{};
  std::array<int16_t, 256 + 68> byte_of_code_point{};  // -1: not a byte-level character

  ByteLevelTable() {
    byte_of_code_point.fill(-1);
    uint32_t next_extra = 256;
    for (uint32_t byte = 0; byte < 256; ++byte) {
      const bool printable = (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) ||
                             (byte >= 0xAE && byte <= 0xFF);
      const uint32_t code_point = printable ? byte : next_extra++;
      code_point_of_byte[byte] = code_point;
      byte_of_code_point[code_point] = static_cast<int16_t>(byte);
    }
  }
};

const ByteLevelTable& byte_level_table() {
  static const ByteLevelTable kTable;
  return kTable;
}

}  // namespace

std::string byte_level_char(uint8_t byte) {
  std::string out;
  unicode::append_utf8(out, byte_level_table().code_point_of_byte[byte]);
  return out;
}

std::string to_byte_level(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char byte : bytes)
    unicode::append_utf8(out, byte_level_table().code_point_of_byte[static_cast<uint8_t>(byte)]);
  return out;
}

std::optional<std::string> from_byte_level(std::string_view piece) {
  const ByteLevelTable& table = byte_level_table();
  std::string out;
  out.reserve(piece.size());
  for (size_t offset = 0; offset < piece.size();) {
    const unicode::DecodedChar decoded = unicode::decode_at(piece, offset);
    if (decoded.code_point >= table.byte_of_code_point.size() ||
        table.byte_of_code_point[decoded.code_point] < 0)
      return std::nullopt;
    out.push_back(static_cast<char>(table.byte_of_code_point[decoded.code_point]));
    offset += decoded.length;
  }
  return out;
}

Expected<std::unique_ptr<ByteLevelBpe>> ByteLevelBpe::create(const TokenMap& vocab,
                                                             const std::vector<MergePair>& merges,
                                                             const ByteLevelBpeOptions& options) {
  std::unique_ptr<ByteLevelBpe> model(new ByteLevelBpe(options));
  for (uint32_t byte = 0; byte < 256; ++byte) {
    auto found = vocab.find(byte_level_char(static_cast<uint8_t>(byte)));
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
  if (options.ignore_merges) model->whole_words_ = vocab;
  return model;
}

std::vector<int32_t> ByteLevelBpe::encode_word(std::string_view word) const {
  if (options_.ignore_merges) {
    auto found = whole_words_.find(to_byte_level(word));
    if (found != whole_words_.end()) return {found->second};
  }
  std::vector<int32_t> symbols;  // [bytes] one id per byte, then merged in place
  symbols.reserve(word.size());
  for (char byte : word) {
    const int32_t id = byte_ids_[static_cast<uint8_t>(byte)];
    if (id >= 0) {
      symbols.push_back(id);
    } else if (options_.unknown_id) {
      symbols.push_back(*options_.unknown_id);
    }
  }
  merges_.apply(symbols);
  return symbols;
}

void ByteLevelBpe::encode_word_cached(std::string_view word, std::vector<int32_t>& ids) const {
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto found = word_cache_.find(word);
    if (found != word_cache_.end()) {
      ids.insert(ids.end(), found->second.begin(), found->second.end());
      return;
    }
  }
  std::vector<int32_t> word_ids = encode_word(word);
  ids.insert(ids.end(), word_ids.begin(), word_ids.end());
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (word_cache_.size() >= kMaxCachedWords) word_cache_.clear();
  word_cache_.emplace(std::string(word), std::move(word_ids));
}

void ByteLevelBpe::encode(std::string_view fragment, FragmentStart /*start*/,
                          std::vector<int32_t>& ids) const {
  std::string prefixed;
  if (options_.add_prefix_space && !fragment.starts_with(' ')) {
    prefixed.reserve(fragment.size() + 1);
    prefixed.append(1, ' ').append(fragment);
    fragment = prefixed;
  }
  std::vector<std::string_view> words;
  pre_tokenize(fragment, options_.pre_tokenizer, words);
  for (std::string_view word : words) encode_word_cached(word, ids);
}

}  // namespace moenav
