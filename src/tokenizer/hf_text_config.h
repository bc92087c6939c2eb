// What the normalizer and pre_tokenizer sections of a Hugging Face tokenizer.json mean for us:
// which vocabulary family the pieces are in (byte-level "Ġthe" or SentencePiece "▁the"), which
// split runs before BPE, and where "▁" is prepended. Steps that would change ids in ways we do not
// implement are errors, never silently skipped.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include "moenav/status.h"
#include "tokenizer/metaspace_bpe.h"
#include "tokenizer/pretokenizer.h"

namespace moenav {

struct HfTextConfig {
  // Byte-level family (a ByteLevel pre-tokenizer or decoder).
  bool byte_level = false;
  PreTokenizer pre_tokenizer = PreTokenizer::None;
  bool add_prefix_space = false;  // ByteLevel's: ' ' in front of a fragment without one

  // SentencePiece family (a Metaspace pre-tokenizer, or Prepend / Replace normalizers).
  bool metaspace = false;
  PrependScheme prepend = PrependScheme::Never;
  bool prepend_before_space = false;
  bool split = false;
};

// Reads root["normalizer"], root["pre_tokenizer"] and root["decoder"]. May throw
// nlohmann::json::exception on fields of the wrong type (the caller reports those).
Expected<HfTextConfig> parse_hf_text_config(const nlohmann::json& root);

}  // namespace moenav
