// Loading the vocabulary a GGUF file embeds (llama.cpp's tokenizer.ggml.* keys): "gpt2" is
// byte-level BPE with merges, "llama" is SentencePiece BPE with scores. Control, user-defined and
// unknown tokens are matched verbatim in text, as llama.cpp does when parsing special tokens.
#include "io/gguf.h"
#include "tokenizer/byte_level_bpe.h"
#include "tokenizer/sentencepiece_bpe.h"
#include "tokenizer/tokenizer_impl.h"

namespace moenav {

namespace {

struct GgufVocab {
  std::vector<std::string> tokens;
  std::vector<TokenKind> kinds;  // [tokens]
  std::vector<float> scores;     // [tokens]; zeros when the file has none
};

Expected<GgufVocab> read_vocab(const GgufFile& file) {
  GgufVocab vocab;
  auto tokens = file.get_string_array("tokenizer.ggml.tokens");
  if (!tokens || tokens->empty())
    return Status::error("tokenizer.ggml.tokens is missing or empty");
  vocab.tokens = std::move(*tokens);
  const size_t count = vocab.tokens.size();

  vocab.kinds.assign(count, TokenKind::Normal);
  if (file.has("tokenizer.ggml.token_type")) {
    auto types = file.get_int_array("tokenizer.ggml.token_type");
    if (!types || types->size() != count)
      return Status::errorf("tokenizer.ggml.token_type must be {} integers (one per token)", count);
    for (size_t id = 0; id < count; ++id) {
      const int64_t type = (*types)[id];
      if (type < 1 || type > static_cast<int64_t>(TokenKind::Count))
        return Status::errorf("tokenizer.ggml.token_type[{}] = {} is not a token type (1..6)", id,
                              type);
      vocab.kinds[id] = static_cast<TokenKind>(type - 1);
    }
  }

  vocab.scores.assign(count, 0.0f);
  if (file.has("tokenizer.ggml.scores")) {
    auto scores = file.get_float_array("tokenizer.ggml.scores");
    if (!scores || scores->size() != count)
      return Status::errorf("tokenizer.ggml.scores must be {} floats (one per token)", count);
    for (size_t id = 0; id < count; ++id) vocab.scores[id] = static_cast<float>((*scores)[id]);
  }
  return vocab;
}

std::optional<int32_t> optional_id(const GgufFile& file, const std::string& key) {
  auto value = file.get_int(key);
  if (!value || *value < 0 || *value > INT32_MAX) return std::nullopt;
  return static_cast<int32_t>(*value);
}

// Fills the per-id tables; `bytes_of` maps a normal piece to the bytes it decodes to.
template <typename BytesOf>
void fill_tables(const GgufVocab& vocab, Tokenizer::Impl& impl, BytesOf bytes_of) {
  impl.resize(vocab.tokens.size());
  for (size_t id = 0; id < vocab.tokens.size(); ++id) {
    const TokenKind kind = vocab.kinds[id];
    const auto token = static_cast<int32_t>(id);
    if (kind == TokenKind::Control || kind == TokenKind::UserDefined || kind == TokenKind::Unknown) {
      impl.add_token({.content = vocab.tokens[id], .id = token}, kind);
      continue;
    }
    impl.pieces[id] = vocab.tokens[id];
    impl.kinds[id] = kind;
    impl.token_bytes[id] = bytes_of(vocab.tokens[id], kind);
    impl.piece_ids.try_emplace(vocab.tokens[id], token);
  }
}

Status load_gpt2(const GgufFile& file, const GgufVocab& vocab, Tokenizer::Impl& impl) {
  const std::string pre_name = file.get_string("tokenizer.ggml.pre").value_or("gpt-2");
  const auto pre = pre_tokenizer_for_gguf_name(pre_name);
  if (!pre)
    return Status::errorf("tokenizer.ggml.pre '{}' is not supported (supported: gpt-2, qwen2, "
                          "llama-bpe)",
                          pre_name);
  auto merge_texts = file.get_string_array("tokenizer.ggml.merges");
  if (!merge_texts) return Status::error("tokenizer.ggml.merges is missing (needed by gpt2 vocab)");
  std::vector<ByteLevelBpe::MergePair> merges;
  merges.reserve(merge_texts->size());
  for (const std::string& text : *merge_texts) {
    const size_t space = text.find(' ', 1);
    if (space == std::string::npos)
      return Status::errorf("tokenizer.ggml.merges[{}] '{}' is not 'left right'", merges.size(), text);
    merges.emplace_back(text.substr(0, space), text.substr(space + 1));
  }

  TokenMap normal_pieces;  // what merges may use and produce
  for (size_t id = 0; id < vocab.tokens.size(); ++id)
    normal_pieces.try_emplace(vocab.tokens[id], static_cast<int32_t>(id));
  ByteLevelBpeOptions options;
  options.pre_tokenizer = *pre;
  options.unknown_id = optional_id(file, "tokenizer.ggml.unknown_token_id");
  auto bpe = ByteLevelBpe::create(normal_pieces, merges, options);
  if (!bpe.ok()) return bpe.status().with_context("tokenizer.ggml.merges");
  impl.model = std::move(bpe).value();

  fill_tables(vocab, impl, [](const std::string& piece, TokenKind) {
    auto bytes = from_byte_level(piece);
    return bytes ? std::move(*bytes) : piece;
  });
  impl.add_bos = file.get_bool("tokenizer.ggml.add_bos_token").value_or(false);
  return ok_status();
}

Status load_llama(const GgufFile& file, const GgufVocab& vocab, Tokenizer::Impl& impl) {
  SentencePieceOptions options;
  options.add_space_prefix = file.get_bool("tokenizer.ggml.add_space_prefix").value_or(true);
  options.unknown_id = optional_id(file, "tokenizer.ggml.unknown_token_id");
  if (!options.unknown_id) {
    for (size_t id = 0; id < vocab.kinds.size() && !options.unknown_id; ++id) {
      if (vocab.kinds[id] == TokenKind::Unknown) options.unknown_id = static_cast<int32_t>(id);
    }
  }
  impl.model = std::make_unique<SentencePieceBpe>(vocab.tokens, vocab.scores, vocab.kinds, options);
  fill_tables(vocab, impl, [](const std::string& piece, TokenKind kind) {
    return sentencepiece_piece_bytes(piece, kind);
  });
  if (options.add_space_prefix) impl.space_prefix = Tokenizer::Impl::SpacePrefix::AtEveryFragment;
  impl.add_bos = file.get_bool("tokenizer.ggml.add_bos_token").value_or(true);
  return ok_status();
}

Expected<std::unique_ptr<Tokenizer::Impl>> load_gguf_vocab(const GgufFile& file) {
  const auto model = file.get_string("tokenizer.ggml.model");
  if (!model) return Status::error("no tokenizer.ggml.model: the file carries no vocabulary");
  if (*model != "gpt2" && *model != "llama")
    return Status::errorf("tokenizer.ggml.model '{}' is not supported (supported: gpt2, llama)",
                          *model);
  MOENAV_ASSIGN_OR_RETURN(GgufVocab vocab, read_vocab(file));

  auto impl = std::make_unique<Tokenizer::Impl>();
  MOENAV_RETURN_IF_ERROR(*model == "gpt2" ? load_gpt2(file, vocab, *impl)
                                          : load_llama(file, vocab, *impl));
  impl->bos = optional_id(file, "tokenizer.ggml.bos_token_id");
  impl->eos = optional_id(file, "tokenizer.ggml.eos_token_id");
  if (!impl->bos) impl->add_bos = false;
  impl->chat_template = file.get_string("tokenizer.chat_template");
  return impl;
}

}  // namespace

Expected<Tokenizer> Tokenizer::from_gguf(const GgufFile& file) {
  auto impl = load_gguf_vocab(file);
  if (!impl.ok()) return impl.status().with_context(file.path());
  MOENAV_RETURN_IF_ERROR((*impl)->validate(file.path()));
  return Tokenizer(std::move(impl).value());
}

}  // namespace moenav
