// Loading Hugging Face tokenizers: tokenizer.json (model, added tokens, pre-tokenizer,
// post-processor) and, in a model directory, tokenizer_config.json (special tokens, chat template).
// Only what changes the ids we produce is read; anything that would change them and that we do not
// implement is an error rather than a silently different tokenization.
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tokenizer/byte_level_bpe.h"
#include "tokenizer/hf_text_config.h"
#include "tokenizer/metaspace_bpe.h"
#include "tokenizer/sentencepiece_bpe.h"
#include "tokenizer/tokenizer_impl.h"

namespace moenav {

namespace {

using nlohmann::json;

// Ids beyond this are a corrupt file, not a vocabulary (the largest real ones are ~256k).
constexpr int64_t kMaxTokenId = 1 << 24;

Expected<std::string> read_text_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return Status::errorf("{}: cannot open file", path);
  std::ostringstream contents;
  contents << file.rdbuf();
  if (file.bad()) return Status::errorf("{}: read error", path);
  return contents.str();
}

Expected<json> read_json_file(const std::string& path) {
  MOENAV_ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& error) {
    return Status::errorf("{}: invalid JSON: {}", path, error.what());
  }
  if (!root.is_object()) return Status::errorf("{}: expected a JSON object at the top level", path);
  return root;
}

Expected<std::vector<ByteLevelBpe::MergePair>> parse_merges(const json& merges) {
  std::vector<ByteLevelBpe::MergePair> pairs;
  pairs.reserve(merges.size());
  for (const json& merge : merges) {
    if (merge.is_string()) {  // "a b" (tokenizers < 0.20)
      const std::string text = merge.get<std::string>();
      const size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos)
        return Status::errorf("merge {} '{}' is not two pieces separated by one space",
                              pairs.size(), text);
      pairs.emplace_back(text.substr(0, space), text.substr(space + 1));
    } else if (merge.is_array() && merge.size() == 2) {  // ["a", "b"]
      pairs.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
    } else {
      return Status::errorf("merge {} is neither \"a b\" nor [\"a\", \"b\"]", pairs.size());
    }
  }
  return pairs;
}

// Parses model.vocab into `piece_to_id` and fills the per-id tables. Byte-level pieces decode
// through the byte table; SentencePiece pieces turn "▁" into ' ', and with byte fallback the
// <0xNN> pieces are byte tokens.
Status load_vocab(const json& vocab, const HfTextConfig& text, bool byte_fallback,
                  Tokenizer::Impl& impl, TokenMap& piece_to_id) {
  if (!vocab.is_object()) return Status::error("model.vocab is not an object");
  int64_t max_id = -1;
  for (const auto& [piece, id_value] : vocab.items()) {
    const int64_t id = id_value.get<int64_t>();
    if (id < 0 || id >= kMaxTokenId)
      return Status::errorf("model.vocab: token '{}' has id {} (expected 0..{})", piece, id,
                            kMaxTokenId - 1);
    max_id = std::max(max_id, id);
    piece_to_id.insert_or_assign(piece, static_cast<int32_t>(id));
  }
  impl.resize(static_cast<size_t>(max_id + 1));
  for (const auto& [piece, id] : piece_to_id) {
    impl.pieces[id] = piece;
    impl.piece_ids.insert_or_assign(piece, id);
    if (text.byte_level) {
      impl.kinds[id] = TokenKind::Normal;
      auto bytes = from_byte_level(piece);
      impl.token_bytes[id] = bytes ? std::move(*bytes) : piece;
    } else {
      const bool byte_token = byte_fallback && piece.size() == 6 && piece.starts_with("<0x");
      impl.kinds[id] = byte_token ? TokenKind::Byte : TokenKind::Normal;
      impl.token_bytes[id] = sentencepiece_piece_bytes(piece, impl.kinds[id]);
    }
  }
  return ok_status();
}

Status load_added_tokens(const json& root, Tokenizer::Impl& impl) {
  if (!root.contains("added_tokens") || root.at("added_tokens").is_null()) return ok_status();
  for (const json& entry : root.at("added_tokens")) {
    AddedToken token;
    token.content = entry.at("content").get<std::string>();
    const int64_t id = entry.at("id").get<int64_t>();
    if (id < 0 || id >= kMaxTokenId)
      return Status::errorf("added token '{}' has id {}", token.content, id);
    token.id = static_cast<int32_t>(id);
    token.lstrip = entry.value("lstrip", false);
    token.rstrip = entry.value("rstrip", false);
    token.single_word = entry.value("single_word", false);
    impl.add_token(token, entry.value("special", false) ? TokenKind::Control : TokenKind::UserDefined);
  }
  return ok_status();
}

// The BOS a TemplateProcessing post-processor puts in front of a single sequence, if any.
std::optional<int32_t> post_processor_bos(const json& processor, const Tokenizer::Impl& impl) {
  if (!processor.is_object()) return std::nullopt;
  const std::string type = processor.value("type", "");
  if (type == "Sequence") {
    for (const json& inner : processor.value("processors", json::array())) {
      if (auto bos = post_processor_bos(inner, impl)) return bos;
    }
    return std::nullopt;
  }
  if (type != "TemplateProcessing") return std::nullopt;
  const json single = processor.value("single", json::array());
  if (single.empty() || !single[0].contains("SpecialToken")) return std::nullopt;
  const std::string name = single[0]["SpecialToken"].value("id", "");
  const json& special = processor.value("special_tokens", json::object());
  if (special.contains(name) && !special[name].value("ids", json::array()).empty())
    return special[name]["ids"][0].get<int32_t>();
  auto found = impl.piece_ids.find(name);
  return found == impl.piece_ids.end() ? std::nullopt : std::optional<int32_t>(found->second);
}

Expected<std::unique_ptr<SubwordModel>> make_model(const json& model, const HfTextConfig& text,
                                                   const TokenMap& vocab) {
  MOENAV_ASSIGN_OR_RETURN(auto merges, parse_merges(model.at("merges")));
  std::optional<int32_t> unknown_id;
  const json unknown = model.value("unk_token", json());
  if (unknown.is_string()) {
    auto found = vocab.find(unknown.get<std::string>());
    if (found != vocab.end()) unknown_id = found->second;
  }
  if (text.byte_level) {
    ByteLevelBpeOptions options;
    options.pre_tokenizer = text.pre_tokenizer;
    options.add_prefix_space = text.add_prefix_space;
    options.ignore_merges = model.value("ignore_merges", false);
    options.unknown_id = unknown_id;
    MOENAV_ASSIGN_OR_RETURN(auto bpe, ByteLevelBpe::create(vocab, merges, options));
    return std::unique_ptr<SubwordModel>(std::move(bpe));
  }
  MetaspaceBpeOptions options;
  options.prepend = text.prepend;
  options.prepend_before_space = text.prepend_before_space;
  options.split = text.split;
  options.byte_fallback = model.value("byte_fallback", false);
  options.fuse_unknown = model.value("fuse_unk", false);
  options.unknown_id = unknown_id;
  MOENAV_ASSIGN_OR_RETURN(auto bpe, MetaspaceBpe::create(vocab, merges, options));
  return std::unique_ptr<SubwordModel>(std::move(bpe));
}

Expected<std::unique_ptr<Tokenizer::Impl>> load_tokenizer_json(const json& root) {
  if (!root.contains("model") || !root.at("model").is_object())
    return Status::error("no 'model' section (is this a Hugging Face tokenizer.json?)");
  const json& model = root.at("model");
  const std::string type = model.value("type", model.contains("merges") ? "BPE" : "");
  if (type != "BPE")
    return Status::errorf("model type '{}' is not supported (supported: BPE)", type);
  if (!model.contains("vocab") || !model.contains("merges"))
    return Status::error("BPE model needs 'vocab' and 'merges'");
  MOENAV_ASSIGN_OR_RETURN(const HfTextConfig text, parse_hf_text_config(root));

  auto impl = std::make_unique<Tokenizer::Impl>();
  TokenMap vocab;
  MOENAV_RETURN_IF_ERROR(
      load_vocab(model.at("vocab"), text, model.value("byte_fallback", false), *impl, vocab));
  auto subword_model = make_model(model, text, vocab);
  if (!subword_model.ok()) return subword_model.status().with_context("model.merges");
  impl->model = std::move(subword_model).value();
  if (text.metaspace && text.prepend != PrependScheme::Never) {
    impl->space_prefix = text.prepend == PrependScheme::First
                             ? Tokenizer::Impl::SpacePrefix::AtTextStart
                             : Tokenizer::Impl::SpacePrefix::AtEveryFragment;
  }

  MOENAV_RETURN_IF_ERROR(load_added_tokens(root, *impl));
  impl->bos = post_processor_bos(root.value("post_processor", json()), *impl);
  impl->add_bos = impl->bos.has_value();
  return impl;
}

Expected<std::unique_ptr<Tokenizer::Impl>> load_tokenizer_json_file(const std::string& path) {
  MOENAV_ASSIGN_OR_RETURN(json root, read_json_file(path));
  try {
    auto impl = load_tokenizer_json(root);
    if (!impl.ok()) return impl.status().with_context(path);
    MOENAV_RETURN_IF_ERROR((*impl)->validate(path));
    return impl;
  } catch (const json::exception& error) {  // a field of the wrong type or a missing key
    return Status::errorf("{}: unexpected structure: {}", path, error.what());
  }
}

// A special-token entry of tokenizer_config.json: "<s>", {"content": "<s>", ...} or null.
std::optional<std::string> special_token_text(const json& config, const char* key) {
  if (!config.contains(key)) return std::nullopt;
  const json& value = config.at(key);
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content")) return value.at("content").get<std::string>();
  return std::nullopt;
}

// chat_template is a string, or a list of {"name", "template"} (the "default" one is ours).
std::optional<std::string> chat_template_of(const json& config) {
  if (!config.contains("chat_template")) return std::nullopt;
  const json& value = config.at("chat_template");
  if (value.is_string()) return value.get<std::string>();
  if (!value.is_array() || value.empty()) return std::nullopt;
  for (const json& entry : value) {
    if (entry.value("name", "") == "default") return entry.value("template", "");
  }
  return value[0].value("template", "");
}

Status apply_tokenizer_config(const std::string& path, Tokenizer::Impl& impl) {
  MOENAV_ASSIGN_OR_RETURN(json config, read_json_file(path));
  try {
    for (const char* key : {"bos_token", "eos_token"}) {
      const auto text = special_token_text(config, key);
      if (!text) continue;
      auto found = impl.piece_ids.find(*text);
      if (found == impl.piece_ids.end())
        return Status::errorf("{}: {} '{}' is not in the vocabulary", path, key, *text);
      (key == std::string_view("bos_token") ? impl.bos : impl.eos) = found->second;
    }
    if (config.contains("add_bos_token") && config.at("add_bos_token").is_boolean())
      impl.add_bos = config.at("add_bos_token").get<bool>() && impl.bos.has_value();
    if (auto chat_template = chat_template_of(config)) impl.chat_template = std::move(chat_template);
  } catch (const json::exception& error) {
    return Status::errorf("{}: unexpected structure: {}", path, error.what());
  }
  return ok_status();
}

}  // namespace

Expected<Tokenizer> Tokenizer::from_tokenizer_json(const std::string& path) {
  MOENAV_ASSIGN_OR_RETURN(std::unique_ptr<Impl> impl, load_tokenizer_json_file(path));
  return Tokenizer(std::move(impl));
}

Expected<Tokenizer> Tokenizer::from_hf_directory(const std::string& directory) {
  const std::string tokenizer_path = directory + "/tokenizer.json";
  if (!std::ifstream(tokenizer_path))
    return Status::errorf("{}: cannot open file (a Hugging Face model directory needs "
                          "tokenizer.json)",
                          tokenizer_path);
  MOENAV_ASSIGN_OR_RETURN(std::unique_ptr<Impl> impl, load_tokenizer_json_file(tokenizer_path));

  const std::string config_path = directory + "/tokenizer_config.json";
  if (std::ifstream(config_path)) MOENAV_RETURN_IF_ERROR(apply_tokenizer_config(config_path, *impl));
  // Newer transformers write the template to its own file.
  const std::string template_path = directory + "/chat_template.jinja";
  if (!impl->chat_template && std::ifstream(template_path)) {
    MOENAV_ASSIGN_OR_RETURN(impl->chat_template, read_text_file(template_path));
  }
  return Tokenizer(std::move(impl));
}

}  // namespace moenav
