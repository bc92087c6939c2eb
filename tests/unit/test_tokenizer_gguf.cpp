// Tokenizers loaded from GGUF metadata: the real llama.cpp conversions of the tiny models (gpt2
// vocabulary) must agree with tokenizer.json id for id, and a hand-built SentencePiece ("llama")
// vocabulary gives the encodings derived below by hand from its scores.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/gguf.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace moenav {
namespace {

using testing::shared_path;

std::string read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

std::string scratch_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("moenav_tokenizer_gguf_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

void check_gguf_matches_json(const std::string& gguf_relative, const std::string& model_relative) {
  MOENAV_REQUIRE_SHARED(gguf_relative);
  MOENAV_REQUIRE_SHARED("data/wikitext-2/test.txt");
  auto file = GgufFile::open(shared_path(gguf_relative));
  ASSERT_TRUE(file.ok()) << file.error();
  auto from_gguf = Tokenizer::from_gguf(*file);
  ASSERT_TRUE(from_gguf.ok()) << from_gguf.error();
  auto from_json = Tokenizer::from_hf_directory(shared_path(model_relative));
  ASSERT_TRUE(from_json.ok()) << from_json.error();

  EXPECT_EQ(from_gguf->vocab_size(), from_json->vocab_size());
  EXPECT_EQ(from_gguf->bos_id(), 0);
  EXPECT_EQ(from_gguf->eos_id(), 0);
  EXPECT_FALSE(from_gguf->add_bos_by_default());  // gpt2 vocabularies default to no BOS

  const auto reference = nlohmann::json::parse(read_file(shared_path(model_relative + "/reference.json")));
  for (const auto& entry : reference["tokenizer"]) {
    const std::string text = entry["text"];
    EXPECT_EQ(from_gguf->encode(text), entry["ids"].get<std::vector<int32_t>>()) << text;
    EXPECT_EQ(from_gguf->decode(entry["ids"].get<std::vector<int32_t>>()), text);
  }
  const std::string text = read_file(shared_path("data/wikitext-2/test.txt")).substr(0, 200000) +
                           "<|endoftext|> tail";
  const std::vector<int32_t> ids = from_gguf->encode(text);
  EXPECT_EQ(ids, from_json->encode(text));
  EXPECT_EQ(from_gguf->decode(ids), text);
}

TEST(TokenizerGguf, TinyMixtralVocabMatchesTokenizerJson) {
  check_gguf_matches_json("models/tiny-mixtral/llama.cpp/tiny-mixtral-q8_0.gguf",
                          "models/tiny-mixtral");
}

TEST(TokenizerGguf, TinyQwen3MoeVocabMatchesTokenizerJson) {
  check_gguf_matches_json("models/tiny-qwen3-moe/llama.cpp/tiny-qwen3-moe-q8_0.gguf",
                          "models/tiny-qwen3-moe");
}

// A small SentencePiece vocabulary. Ids:
//   0 <unk>, 1 <s>, 2 </s>                       (unknown, control, control)
//   3 ▁, 4 h, 5 e, 6 l, 7 o, 8 w, 9 r, 10 d, 11 a, 12 b, 13 c, 14 x, 15 y, 16 z   (score -100)
//   17 ll -1, 18 he -2, 19 llo -3, 20 hello -4, 21 ▁hello -5, 22 ▁w -6, 23 or -7, 24 ld -8,
//   25 ▁wor -9, 26 ▁world -10, 27 ab -12, 28 bc -11, 29 xy -13, 30 yz -13, 31 ▁a -20
//   32 + b: <0xBB> byte tokens for every byte b (only with `byte_tokens`)
struct SpmVocabOptions {
  bool byte_tokens = true;
  std::optional<bool> add_space_prefix;  // key absent when unset (llama.cpp's default: true)
};

std::string write_spm_gguf(const std::string& name, const SpmVocabOptions& options) {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0, 0, 0};
  std::vector<int32_t> types = {2, 3, 3};
  for (const char* letter : {"\xE2\x96\x81", "h", "e", "l", "o", "w", "r", "d", "a", "b", "c", "x",
                             "y", "z"}) {
    tokens.push_back(letter);
    scores.push_back(-100);
    types.push_back(1);
  }
  const std::pair<const char*, float> merged[] = {
      {"ll", -1},   {"he", -2},  {"llo", -3},     {"hello", -4},
      {"\xE2\x96\x81hello", -5}, {"\xE2\x96\x81w", -6}, {"or", -7}, {"ld", -8},
      {"\xE2\x96\x81wor", -9},   {"\xE2\x96\x81world", -10},        {"ab", -12},
      {"bc", -11},  {"xy", -13}, {"yz", -13},     {"\xE2\x96\x81" "a", -20}};
  for (const auto& [piece, score] : merged) {
    tokens.push_back(piece);
    scores.push_back(score);
    types.push_back(1);
  }
  if (options.byte_tokens) {
    for (int byte = 0; byte < 256; ++byte) {
      char piece[8];
      std::snprintf(piece, sizeof(piece), "<0x%02X>", byte);
      tokens.push_back(piece);
      scores.push_back(0);
      types.push_back(6);
    }
  }
  GgufWriter writer;
  writer.set_string("general.architecture", "llama");
  writer.set_string("tokenizer.ggml.model", "llama");
  writer.set_string_array("tokenizer.ggml.tokens", tokens);
  writer.set_float32_array("tokenizer.ggml.scores", scores);
  writer.set_int32_array("tokenizer.ggml.token_type", types);
  writer.set_uint32("tokenizer.ggml.bos_token_id", 1);
  writer.set_uint32("tokenizer.ggml.eos_token_id", 2);
  writer.set_uint32("tokenizer.ggml.unknown_token_id", 0);
  if (options.add_space_prefix) writer.set_bool("tokenizer.ggml.add_space_prefix", *options.add_space_prefix);
  writer.set_string("tokenizer.chat_template", "[INST] {{ prompt }} [/INST]");
  const std::string path = scratch_path(name);
  const Status written = writer.write(path);
  EXPECT_TRUE(written.ok()) << written.message();
  return path;
}

Tokenizer load(const std::string& path) {
  auto file = GgufFile::open(path);
  EXPECT_TRUE(file.ok()) << file.error();
  auto tokenizer = Tokenizer::from_gguf(*file);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.error();
  std::filesystem::remove(path);
  return std::move(tokenizer).value();
}

using Ids = std::vector<int32_t>;

TEST(TokenizerGguf, SentencePieceMergesByScore) {
  const Tokenizer tokenizer = load(write_spm_gguf("spm.gguf", {}));
  EXPECT_EQ(tokenizer.vocab_size(), 32 + 256);
  EXPECT_EQ(tokenizer.bos_id(), 1);
  EXPECT_EQ(tokenizer.eos_id(), 2);
  EXPECT_TRUE(tokenizer.add_bos_by_default());
  EXPECT_EQ(tokenizer.chat_template(), "[INST] {{ prompt }} [/INST]");

  // "▁hello▁world": ll(-1), he(-2), llo(-3), hello(-4), ▁hello(-5), ▁w(-6), or(-7), ld(-8),
  // ▁wor(-9), ▁world(-10), in that order.
  EXPECT_EQ(tokenizer.encode("hello world"), (Ids{21, 26}));
  // "▁abc": bc(-11) beats ab(-12); then ▁a(-20). "abc" is not a piece, so a+bc stays apart.
  EXPECT_EQ(tokenizer.encode("abc"), (Ids{31, 28}));
  // "▁xyz": xy and yz tie at -13; the leftmost wins, leaving z alone (▁x is no piece).
  EXPECT_EQ(tokenizer.encode("xyz"), (Ids{3, 29, 16}));
  // Two spaces: the second ▁ has no piece to join.
  EXPECT_EQ(tokenizer.encode("hello  world"), (Ids{21, 3, 26}));
  // é (C3 A9) has no piece: its bytes fall back to <0xC3> = 32 + 195 and <0xA9> = 32 + 169.
  EXPECT_EQ(tokenizer.encode("h\xC3\xA9"), (Ids{3, 4, 227, 201}));
  // Control tokens are matched in text; the text after one starts a sequence again (▁ prefix).
  EXPECT_EQ(tokenizer.encode("<s>hello"), (Ids{1, 21}));
  EXPECT_EQ(tokenizer.encode("hello", /*add_bos=*/true), (Ids{1, 21}));
  EXPECT_EQ(tokenizer.encode("hello</s>"), (Ids{21, 2}));
}

TEST(TokenizerGguf, SentencePieceDecode) {
  const Tokenizer tokenizer = load(write_spm_gguf("spm_decode.gguf", {}));
  EXPECT_EQ(tokenizer.decode({21, 26}), "hello world");  // the prefix space is dropped
  EXPECT_EQ(tokenizer.decode({26}), "world");
  EXPECT_EQ(tokenizer.decode_token(26), " world");  // raw bytes keep it
  EXPECT_EQ(tokenizer.decode({3, 4, 227, 201}), "h\xC3\xA9");
  EXPECT_EQ(tokenizer.decode_token(227), "\xC3");  // a byte token is one raw byte
  EXPECT_EQ(tokenizer.decode({1, 21, 2}), "<s>hello</s>");
  EXPECT_EQ(tokenizer.piece(21), "\xE2\x96\x81hello");
  EXPECT_EQ(tokenizer.token_id("\xE2\x96\x81world"), 26);
  EXPECT_TRUE(tokenizer.is_special(1));
  EXPECT_FALSE(tokenizer.is_special(227));
  for (const char* text : {"hello world", "  abc xyz ", "h\xC3\xA9 <s>hello</s> world",
                           "\xE6\x97\xA5\xE6\x9C\xAC\n\t"}) {
    EXPECT_EQ(tokenizer.decode(tokenizer.encode(text)), text) << text;
  }
}

TEST(TokenizerGguf, SentencePieceWithoutBytesOrPrefix) {
  const Tokenizer no_bytes = load(write_spm_gguf("spm_no_bytes.gguf", {.byte_tokens = false, .add_space_prefix = std::nullopt}));
  EXPECT_EQ(no_bytes.vocab_size(), 32);
  EXPECT_EQ(no_bytes.encode("h\xC3\xA9"), (Ids{3, 4, 0}));  // é -> one <unk>

  const Tokenizer no_prefix =
      load(write_spm_gguf("spm_no_prefix.gguf", {.add_space_prefix = false}));
  // "hello▁world": hello forms as before; ▁hello cannot (no ▁ in front); ▁world does.
  EXPECT_EQ(no_prefix.encode("hello world"), (Ids{20, 26}));
  EXPECT_EQ(no_prefix.decode({20, 26}), "hello world");
  EXPECT_EQ(no_prefix.decode({26}), " world");  // nothing to strip without the prefix
}

TEST(TokenizerGguf, Errors) {
  struct Case {
    std::function<void(GgufWriter&)> fill;
    const char* expected_message;
  };
  const std::vector<std::string> tokens = {"<unk>", "a", "b"};
  const Case cases[] = {
      {[](GgufWriter& writer) { writer.set_string("general.architecture", "llama"); },
       "no tokenizer.ggml.model"},
      {[&](GgufWriter& writer) {
         writer.set_string("tokenizer.ggml.model", "bert");
         writer.set_string_array("tokenizer.ggml.tokens", tokens);
       },
       "'bert' is not supported"},
      {[&](GgufWriter& writer) {
         writer.set_string("tokenizer.ggml.model", "llama");
         writer.set_string_array("tokenizer.ggml.tokens", tokens);
         writer.set_int32_array("tokenizer.ggml.token_type", {2, 1});
       },
       "token_type must be 3 integers"},
      {[&](GgufWriter& writer) {
         writer.set_string("tokenizer.ggml.model", "llama");
         writer.set_string_array("tokenizer.ggml.tokens", tokens);
         writer.set_uint32("tokenizer.ggml.bos_token_id", 7);
       },
       "bos token id 7"},
      {[&](GgufWriter& writer) {
         writer.set_string("tokenizer.ggml.model", "gpt2");
         writer.set_string_array("tokenizer.ggml.tokens", tokens);
       },
       "tokenizer.ggml.merges is missing"},
      {[&](GgufWriter& writer) {
         writer.set_string("tokenizer.ggml.model", "gpt2");
         writer.set_string("tokenizer.ggml.pre", "mystery");
         writer.set_string_array("tokenizer.ggml.tokens", tokens);
         writer.set_string_array("tokenizer.ggml.merges", {"a b"});
       },
       "tokenizer.ggml.pre 'mystery'"},
      {[&](GgufWriter& writer) {
         writer.set_string("tokenizer.ggml.model", "gpt2");
         writer.set_string_array("tokenizer.ggml.tokens", tokens);
         writer.set_string_array("tokenizer.ggml.merges", {"a b"});
       },
       "'ab', which is not in the vocabulary"},
  };
  for (const Case& test_case : cases) {
    GgufWriter writer;
    test_case.fill(writer);
    const std::string path = scratch_path("error.gguf");
    ASSERT_TRUE(writer.write(path).ok());
    auto file = GgufFile::open(path);
    ASSERT_TRUE(file.ok()) << file.error();
    auto tokenizer = Tokenizer::from_gguf(*file);
    std::filesystem::remove(path);
    ASSERT_FALSE(tokenizer.ok()) << test_case.expected_message;
    EXPECT_NE(tokenizer.error().find(path), std::string::npos) << tokenizer.error();
    EXPECT_NE(tokenizer.error().find(test_case.expected_message), std::string::npos)
        << tokenizer.error();
  }
}

}  // namespace
}  // namespace moenav
