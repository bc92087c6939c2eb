// Score-ordered BPE over UTF-8 characters (the algorithm of sentencepiece's bpe_model.cc and
// llama.cpp's SPM tokenizer): symbols are a linked list of byte spans of the escaped text, and a
// max-heap holds candidate pairs by the score of the piece they would form.
#include "tokenizer/sentencepiece_bpe.h"

#include <queue>

#include "tokenizer/unicode.h"

namespace moenav {

namespace {

// Parses "<0xNN>"; -1 if the piece is not of that form.
int parse_byte_piece(std::string_view piece) {
  if (piece.size() != 6 || !piece.starts_with("<0x") || piece[5] != '>') return -1;
  int value = 0;
  for (char digit : piece.substr(3, 2)) {
    value <<= 4;
    if (digit >= '0' && digit <= '9') value |= digit - '0';
    else if (digit >= 'A' && digit <= 'F') value |= digit - 'A' + 10;
    else if (digit >= 'a' && digit <= 'f') value |= digit - 'a' + 10;
    else return -1;
  }
  return value;
}

// ' ' -> "▁", with a leading "▁" when asked.
std::string escape_spaces(std::string_view text, bool add_prefix) {
  std::string escaped;
  escaped.reserve(text.size() + 3 * (add_prefix ? 1 : 0) + 8);
  if (add_prefix) escaped.append(kSentencePieceSpace);
  for (char byte : text) {
    if (byte == ' ') {
      escaped.append(kSentencePieceSpace);
    } else {
      escaped.push_back(byte);
    }
  }
  return escaped;
}

}  // namespace

std::string sentencepiece_piece_bytes(std::string_view piece, TokenKind kind) {
  if (kind == TokenKind::Byte) {
    const int byte = parse_byte_piece(piece);
    if (byte >= 0) return std::string(1, static_cast<char>(byte));
  }
  std::string out;
  out.reserve(piece.size());
  for (size_t offset = 0; offset < piece.size();) {
    if (piece.substr(offset).starts_with(kSentencePieceSpace)) {
      out.push_back(' ');
      offset += kSentencePieceSpace.size();
    } else {
      out.push_back(piece[offset++]);
    }
  }
  return out;
}

SentencePieceBpe::SentencePieceBpe(const std::vector<std::string>& pieces,
                                   const std::vector<float>& scores,
                                   const std::vector<TokenKind>& kinds,
                                   const SentencePieceOptions& options)
    : scores_(scores), options_(options) {
  byte_ids_.fill(-1);
  for (size_t id = 0; id < pieces.size(); ++id) {
    const auto token = static_cast<int32_t>(id);
    if (kinds[id] == TokenKind::Normal || kinds[id] == TokenKind::UserDefined) {
      mergeable_.try_emplace(pieces[id], token);
    } else if (kinds[id] == TokenKind::Byte) {
      const int byte = parse_byte_piece(pieces[id]);
      if (byte >= 0 && byte_ids_[byte] < 0) byte_ids_[byte] = token;
    }
  }
}

void SentencePieceBpe::emit_symbol(std::string_view symbol, std::vector<int32_t>& ids) const {
  auto found = mergeable_.find(symbol);
  if (found != mergeable_.end()) {
    ids.push_back(found->second);
    return;
  }
  // Only single characters can lack a piece: merges always form pieces.
  for (char byte : symbol) {
    const int32_t byte_id = byte_ids_[static_cast<uint8_t>(byte)];
    if (byte_id >= 0) {
      ids.push_back(byte_id);
    } else if (options_.unknown_id) {
      ids.push_back(*options_.unknown_id);
      return;  // one unknown token for the whole character, as sentencepiece does
    }
  }
}

void SentencePieceBpe::encode(std::string_view fragment, FragmentStart /*start*/,
                              std::vector<int32_t>& ids) const {
  const std::string text = escape_spaces(fragment, options_.add_space_prefix);
  if (text.empty()) return;

  struct Symbol {
    uint32_t begin;   // byte offset into text
    uint32_t length;  // bytes; 0 once merged into the left neighbour
    int32_t prev;
    int32_t next;
  };
  std::vector<Symbol> symbols;  // [characters of text]
  symbols.reserve(text.size());
  for (size_t offset = 0; offset < text.size();) {
    const uint32_t length = unicode::decode_at(text, offset).length;
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({static_cast<uint32_t>(offset), length, index - 1, index + 1});
    offset += length;
  }
  symbols.back().next = -1;

  struct Candidate {
    float score;
    int32_t left;
    int32_t right;
    uint32_t length;  // of the merged piece; a mismatch means the candidate went stale
  };
  struct Worse {
    bool operator()(const Candidate& a, const Candidate& b) const {
      return a.score != b.score ? a.score < b.score : a.left > b.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, Worse> queue;
  const auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const uint32_t length = symbols[left].length + symbols[right].length;
    auto found = mergeable_.find(std::string_view(text).substr(symbols[left].begin, length));
    if (found == mergeable_.end()) return;
    queue.push({scores_[found->second], left, right, length});
  };
  for (int32_t index = 0; index + 1 < static_cast<int32_t>(symbols.size()); ++index)
    consider(index, index + 1);

  while (!queue.empty()) {
    const Candidate candidate = queue.top();
    queue.pop();
    Symbol& left = symbols[candidate.left];
    Symbol& right = symbols[candidate.right];
    if (left.length == 0 || right.length == 0 || left.length + right.length != candidate.length)
      continue;
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = candidate.left;
    consider(left.prev, candidate.left);
    consider(candidate.left, left.next);
  }

  for (int32_t index = 0; index >= 0; index = symbols[index].next)
    emit_symbol(std::string_view(text).substr(symbols[index].begin, symbols[index].length), ids);
}

}  // namespace moenav
