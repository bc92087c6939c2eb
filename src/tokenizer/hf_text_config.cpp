// Interpreting tokenizer.json's normalizer / pre_tokenizer steps; see hf_text_config.h.
#include "tokenizer/hf_text_config.h"

#include <nlohmann/json.hpp>

#include "tokenizer/sentencepiece_bpe.h"

namespace moenav {

namespace {

using nlohmann::json;

// Applies one normalizer step (a Sequence is several).
Status add_normalizer_step(const json& step, HfTextConfig& config) {
  if (step.is_null()) return ok_status();
  const std::string type = step.value("type", "");
  // NFC is accepted without applying it: text that is already NFC (nearly all) is unaffected.
  if (type == "NFC") return ok_status();
  if (type == "Sequence") {
    for (const json& inner : step.at("normalizers"))
      MOENAV_RETURN_IF_ERROR(add_normalizer_step(inner, config));
    return ok_status();
  }
  // Llama 2 / Mistral (legacy): Prepend("▁") then Replace(" ", "▁"), on every fragment.
  if (type == "Prepend" && step.value("prepend", "") == kSentencePieceSpace) {
    config.metaspace = true;
    config.prepend = PrependScheme::Always;
    config.prepend_before_space = true;
    return ok_status();
  }
  if (type == "Replace" && step.at("pattern").value("String", "") == " " &&
      step.value("content", "") == kSentencePieceSpace) {
    config.metaspace = true;
    return ok_status();
  }
  return Status::errorf("normalizer '{}' is not supported (supported: NFC, and Prepend / Replace "
                        "of \"▁\" as SentencePiece conversions use)",
                        step.dump());
}

Status add_metaspace(const json& step, HfTextConfig& config) {
  if (step.value("replacement", std::string(kSentencePieceSpace)) != kSentencePieceSpace)
    return Status::error("Metaspace with a replacement other than \"▁\" is not supported");
  config.metaspace = true;
  config.split = step.value("split", true);
  config.prepend_before_space = false;
  if (step.contains("prepend_scheme")) {
    const std::string scheme = step.at("prepend_scheme").get<std::string>();
    if (scheme == "first") config.prepend = PrependScheme::First;
    else if (scheme == "always") config.prepend = PrependScheme::Always;
    else if (scheme == "never") config.prepend = PrependScheme::Never;
    else return Status::errorf("Metaspace prepend_scheme '{}' is not known", scheme);
  } else {  // tokenizers < 0.15
    config.prepend = step.value("add_prefix_space", true) ? PrependScheme::Always
                                                          : PrependScheme::Never;
  }
  return ok_status();
}

// Applies one pre-tokenizer step (a Sequence is several).
Status add_pre_tokenizer_step(const json& step, HfTextConfig& config) {
  if (step.is_null()) return ok_status();
  const std::string type = step.value("type", "");
  if (type == "ByteLevel") {
    config.byte_level = true;
    config.add_prefix_space = step.value("add_prefix_space", true);
    if (step.value("use_regex", true)) {
      if (config.pre_tokenizer != PreTokenizer::None)
        return Status::error("ByteLevel with use_regex after a Split is not supported");
      config.pre_tokenizer = PreTokenizer::Gpt2;
    }
    return ok_status();
  }
  if (type == "Split") {
    const json& pattern = step.at("pattern");
    const std::string regex = pattern.value("Regex", "");
    const auto kind = pre_tokenizer_for_regex(regex);
    if (!kind) return Status::errorf("Split pattern '{}' is not one we implement", pattern.dump());
    if (step.value("behavior", "Isolated") != "Isolated" || step.value("invert", false))
      return Status::error("Split is only supported with behavior Isolated and invert false");
    if (config.pre_tokenizer != PreTokenizer::None)
      return Status::error("more than one splitting pre-tokenizer step");
    config.pre_tokenizer = *kind;
    return ok_status();
  }
  if (type == "Metaspace") return add_metaspace(step, config);
  if (type == "Sequence") {
    for (const json& inner : step.at("pretokenizers"))
      MOENAV_RETURN_IF_ERROR(add_pre_tokenizer_step(inner, config));
    return ok_status();
  }
  return Status::errorf("pre_tokenizer type '{}' is not supported (supported: ByteLevel, Split "
                        "with the GPT-2 / Qwen2 / Llama-3 regex, Metaspace, Sequence of those)",
                        type);
}

}  // namespace

Expected<HfTextConfig> parse_hf_text_config(const json& root) {
  HfTextConfig config;
  if (root.contains("normalizer"))
    MOENAV_RETURN_IF_ERROR(add_normalizer_step(root.at("normalizer"), config));
  if (root.contains("pre_tokenizer"))
    MOENAV_RETURN_IF_ERROR(add_pre_tokenizer_step(root.at("pre_tokenizer"), config));
  const json decoder = root.value("decoder", json());
  if (decoder.is_object() && decoder.value("type", "") == "ByteLevel") config.byte_level = true;
  if (config.byte_level && config.metaspace)
    return Status::error("pre_tokenizer / normalizer mix byte-level and Metaspace (\"▁\") steps");
  if (!config.byte_level && !config.metaspace)
    return Status::error("neither byte-level (ByteLevel) nor SentencePiece-style (Metaspace) BPE: "
                         "the vocabulary's text form is unknown");
  return config;
}

}  // namespace moenav
