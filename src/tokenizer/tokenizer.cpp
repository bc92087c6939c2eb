// Tokenizer: cuts added tokens out of the text, hands the text between them to the subword model,
// and decodes ids through the per-id byte table. Loading lives in tokenizer_json.cpp and
// tokenizer_gguf.cpp.
#include "tokenizer/tokenizer.h"

#include <algorithm>

#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace moenav {

namespace {

using unicode::CharClass;

// The character that ends at `end` (start offset and class); nullopt at the start of text.
struct CharBefore {
  size_t begin;
  CharClass char_class;
};
std::optional<CharBefore> char_before(std::string_view text, size_t end) {
  if (end == 0) return std::nullopt;
  size_t begin = end - 1;
  while (begin > 0 && end - begin < 4 && (static_cast<uint8_t>(text[begin]) & 0xC0) == 0x80)
    --begin;
  const unicode::DecodedChar decoded = unicode::decode_at(text, begin);
  if (begin + decoded.length != end) return CharBefore{end - 1, CharClass::Other};
  return CharBefore{begin, unicode::char_class(decoded.code_point)};
}

CharClass class_at(std::string_view text, size_t offset) {
  return unicode::char_class(unicode::decode_at(text, offset).code_point);
}

bool is_word_char(CharClass char_class) {
  return char_class == CharClass::Letter || char_class == CharClass::Number;
}

}  // namespace

// --- AddedTokenMatcher ----------------------------------------------------------------------

void AddedTokenMatcher::add(AddedToken token) {
  if (token.content.empty()) return;  // would match everywhere
  auto& bucket = by_first_byte_[static_cast<uint8_t>(token.content[0])];
  for (uint32_t index : bucket) {
    if (tokens_[index].content == token.content) return;  // first registration wins
  }
  bucket.push_back(static_cast<uint32_t>(tokens_.size()));
  tokens_.push_back(std::move(token));
  std::stable_sort(bucket.begin(), bucket.end(), [&](uint32_t a, uint32_t b) {
    return tokens_[a].content.size() > tokens_[b].content.size();
  });
}

int AddedTokenMatcher::match_at(std::string_view text, size_t offset) const {
  for (uint32_t index : by_first_byte_[static_cast<uint8_t>(text[offset])]) {
    const AddedToken& token = tokens_[index];
    if (text.compare(offset, token.content.size(), token.content) != 0) continue;
    if (token.single_word) {
      const auto before = char_before(text, offset);
      const size_t end = offset + token.content.size();
      if (before && is_word_char(before->char_class)) continue;
      if (end < text.size() && is_word_char(class_at(text, end))) continue;
    }
    return static_cast<int>(index);
  }
  return -1;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<Piece>& pieces) const {
  size_t fragment_begin = 0;
  size_t offset = 0;
  while (offset < text.size()) {
    const int match = tokens_.empty() ? -1 : match_at(text, offset);
    if (match < 0) {
      ++offset;
      continue;
    }
    const AddedToken& token = tokens_[match];
    size_t begin = offset;
    size_t end = offset + token.content.size();
    while (token.lstrip) {
      const auto before = char_before(text, begin);
      if (!before || before->begin < fragment_begin || before->char_class != CharClass::Whitespace)
        break;
      begin = before->begin;
    }
    while (token.rstrip && end < text.size() && class_at(text, end) == CharClass::Whitespace)
      end += unicode::decode_at(text, end).length;
    if (begin > fragment_begin)
      pieces.push_back({text.substr(fragment_begin, begin - fragment_begin), -1});
    pieces.push_back({text.substr(begin, end - begin), token.id});
    fragment_begin = offset = end;
  }
  if (fragment_begin < text.size()) pieces.push_back({text.substr(fragment_begin), -1});
}

// --- Tokenizer::Impl ------------------------------------------------------------------------

void Tokenizer::Impl::resize(size_t vocab_size) {
  pieces.resize(vocab_size);
  token_bytes.resize(vocab_size);
  kinds.resize(vocab_size, TokenKind::Unused);
  is_added.resize(vocab_size, 0);
}

void Tokenizer::Impl::add_token(const AddedToken& token, TokenKind kind) {
  if (static_cast<size_t>(token.id) >= pieces.size()) resize(token.id + 1);
  pieces[token.id] = token.content;
  token_bytes[token.id] = token.content;
  kinds[token.id] = kind;
  is_added[token.id] = 1;
  piece_ids.insert_or_assign(token.content, token.id);
  added_tokens.add(token);
}

Status Tokenizer::Impl::validate(const std::string& source) const {
  const auto in_range = [&](const std::optional<int32_t>& id) {
    return !id || (*id >= 0 && static_cast<size_t>(*id) < pieces.size());
  };
  if (!in_range(bos))
    return Status::errorf("{}: bos token id {} is outside the vocabulary (size {})", source, *bos,
                          pieces.size());
  if (!in_range(eos))
    return Status::errorf("{}: eos token id {} is outside the vocabulary (size {})", source, *eos,
                          pieces.size());
  if (!model) return Status::errorf("{}: no subword model was built", source);
  return ok_status();
}

// --- Tokenizer ------------------------------------------------------------------------------

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  if (add_bos && impl_->bos) ids.push_back(*impl_->bos);

  std::vector<AddedTokenMatcher::Piece> pieces;
  impl_->added_tokens.split(text, pieces);
  for (size_t index = 0; index < pieces.size(); ++index) {
    const AddedTokenMatcher::Piece& piece = pieces[index];
    if (piece.token >= 0) {
      ids.push_back(piece.token);
    } else {
      const FragmentStart start =
          index == 0 ? FragmentStart::TextStart : FragmentStart::AfterAddedToken;
      impl_->model->encode(piece.text, start, ids);
    }
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  using SpacePrefix = Impl::SpacePrefix;
  const SpacePrefix prefix = impl_->space_prefix;
  std::string text;
  bool strip_next = prefix != SpacePrefix::None;  // the next text token may carry an added ' '
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    std::string_view bytes = impl_->token_bytes[id];
    if (impl_->is_added[id]) {
      // A BOS put in front by encode(add_bos) is not part of the text.
      strip_next = prefix == SpacePrefix::AtEveryFragment || (strip_next && id == impl_->bos);
    } else {
      if (strip_next && bytes.starts_with(' ')) bytes.remove_prefix(1);
      strip_next = false;
    }
    text.append(bytes);
  }
  return text;
}

std::string Tokenizer::decode_token(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return impl_->token_bytes[id];
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->pieces.size()); }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }
std::optional<std::string> Tokenizer::chat_template() const { return impl_->chat_template; }
bool Tokenizer::add_bos_by_default() const { return impl_->add_bos; }

std::optional<int32_t> Tokenizer::token_id(std::string_view piece) const {
  auto found = impl_->piece_ids.find(piece);
  if (found == impl_->piece_ids.end()) return std::nullopt;
  return found->second;
}

std::string Tokenizer::piece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return impl_->pieces[id];
}

bool Tokenizer::is_special(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return false;
  const TokenKind kind = impl_->kinds[id];
  return kind == TokenKind::Control || kind == TokenKind::Unknown;
}

}  // namespace moenav
