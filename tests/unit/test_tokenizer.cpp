// Tokenizer acceptance tests: ids against the goldens in reference.json (produced by Hugging Face
// tokenizers), exact token counts of WikiText-2, round trips, the pre-tokenizer scanners on
// hand-derived splits, and the errors a broken tokenizer.json produces.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "test_paths.h"
#include "tokenizer/byte_level_bpe.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace moenav {
namespace {

using testing::shared_path;
using testing::source_path;

std::string read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

std::vector<std::string> split(std::string_view text, PreTokenizer kind) {
  std::vector<std::string_view> words;
  pre_tokenize(text, kind, words);
  return {words.begin(), words.end()};
}

using Words = std::vector<std::string>;

// A scratch directory for files a test writes; removed at the end.
class ScratchDir {
 public:
  ScratchDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("moenav_tokenizer_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
             "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name, const std::string& contents) const {
    const std::string full = (path_ / name).string();
    std::ofstream(full, std::ios::binary) << contents;
    return full;
  }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

// Every "tokenizer" entry and every greedy prompt of a model's reference.json.
void check_reference(const std::string& model_dir) {
  auto tokenizer = Tokenizer::from_hf_directory(model_dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.error();
  const auto reference = nlohmann::json::parse(read_file(model_dir + "/reference.json"));
  ASSERT_FALSE(reference["tokenizer"].empty());
  for (const auto& entry : reference["tokenizer"]) {
    const std::string text = entry["text"];
    EXPECT_EQ(tokenizer->encode(text), entry["ids"].get<std::vector<int32_t>>()) << text;
    EXPECT_EQ(tokenizer->decode(entry["ids"].get<std::vector<int32_t>>()), text);
  }
  for (const auto& entry : reference["greedy"]) {
    const std::string prompt = entry["prompt"];
    EXPECT_EQ(tokenizer->encode(prompt), entry["prompt_ids"].get<std::vector<int32_t>>()) << prompt;
  }
}

TEST(TokenizerUnicode, Classes) {
  using unicode::CharClass;
  using unicode::char_class;
  EXPECT_EQ(char_class('a'), CharClass::Letter);
  EXPECT_EQ(char_class('7'), CharClass::Number);
  EXPECT_EQ(char_class(' '), CharClass::Whitespace);
  EXPECT_EQ(char_class('\t'), CharClass::Whitespace);
  EXPECT_EQ(char_class('\''), CharClass::Other);
  EXPECT_EQ(char_class(0x00E9), CharClass::Letter);      // é
  EXPECT_EQ(char_class(0x00B2), CharClass::Number);      // ² (No)
  EXPECT_EQ(char_class(0x0663), CharClass::Number);      // Arabic-Indic three (Nd)
  EXPECT_EQ(char_class(0x2164), CharClass::Number);      // Roman numeral five (Nl)
  EXPECT_EQ(char_class(0x00A0), CharClass::Whitespace);  // no-break space
  EXPECT_EQ(char_class(0x3000), CharClass::Whitespace);  // ideographic space
  EXPECT_EQ(char_class(0x65E5), CharClass::Letter);      // 日
  EXPECT_EQ(char_class(0x2014), CharClass::Other);       // em dash
  EXPECT_EQ(char_class(0x1F600), CharClass::Other);      // emoji
  EXPECT_EQ(char_class(0x001C), CharClass::Other);       // not White_Space (Python isspace says yes)
  EXPECT_EQ(char_class(unicode::kInvalidCodePoint), CharClass::Other);
}

TEST(TokenizerUnicode, DecodeRejectsMalformedUtf8) {
  EXPECT_EQ(unicode::decode_at("\xC3\xA9", 0).code_point, 0xE9u);
  EXPECT_EQ(unicode::decode_at("\xE6\x97\xA5", 0).length, 3u);
  EXPECT_EQ(unicode::decode_at("\xC0\xAF", 0).code_point, unicode::kInvalidCodePoint);  // overlong
  EXPECT_EQ(unicode::decode_at("\xED\xA0\x80", 0).code_point, unicode::kInvalidCodePoint);  // surrogate
  EXPECT_EQ(unicode::decode_at("\xE6\x97", 0).length, 1u);  // truncated
  EXPECT_EQ(unicode::decode_at("\xFF", 0).code_point, unicode::kInvalidCodePoint);
}

TEST(TokenizerByteLevel, MappingRoundTripsEveryByte) {
  EXPECT_EQ(to_byte_level(" the\n"), "\xC4\xA0the\xC4\x8A");  // "Ġthe" + "Ċ"
  EXPECT_EQ(byte_level_char('\t'), "\xC4\x89");              // ĉ
  EXPECT_EQ(byte_level_char(0xAD), "\xC5\x83");              // soft hyphen is the 68th: U+0143
  std::string all_bytes;
  for (int byte = 0; byte < 256; ++byte) all_bytes.push_back(static_cast<char>(byte));
  EXPECT_EQ(from_byte_level(to_byte_level(all_bytes)), all_bytes);
  EXPECT_EQ(from_byte_level("<|endoftext|>"), "<|endoftext|>");  // printable ASCII is itself
  EXPECT_FALSE(from_byte_level("\xE2\x96\x81").has_value());      // ▁ is not a byte character
}

TEST(TokenizerPreTokenizer, Gpt2) {
  const auto kind = PreTokenizer::Gpt2;
  EXPECT_EQ(split("Hello world", kind), (Words{"Hello", " world"}));
  EXPECT_EQ(split("  leading spaces", kind), (Words{" ", " leading", " spaces"}));
  EXPECT_EQ(split("abc  ", kind), (Words{"abc", "  "}));  // a run at the end stays whole
  EXPECT_EQ(split("a\n\nb", kind), (Words{"a", "\n", "\n", "b"}));
  EXPECT_EQ(split("\tfoo", kind), (Words{"\t", "foo"}));
  EXPECT_EQ(split("I'm he's they'RE", kind), (Words{"I", "'m", " he", "'s", " they", "'", "RE"}));
  EXPECT_EQ(split("abc123 456", kind), (Words{"abc", "123", " 456"}));
  EXPECT_EQ(split("$$$ x!?", kind), (Words{"$$$", " x", "!?"}));
  EXPECT_EQ(split("km\xC2\xB2\t\ttabs", kind), (Words{"km", "\xC2\xB2", "\t", "\t", "tabs"}));
  EXPECT_EQ(split("a\xFF" "b", kind), (Words{"a", "\xFF", "b"}));  // a stray byte is "other"
  EXPECT_EQ(split("", kind), Words{});
}

TEST(TokenizerPreTokenizer, Qwen2AndLlama3) {
  const auto kind = PreTokenizer::Qwen2;
  EXPECT_EQ(split("Hello world", kind), (Words{"Hello", " world"}));
  EXPECT_EQ(split("I'M here", kind), (Words{"I", "'M", " here"}));  // case-insensitive
  EXPECT_EQ(split("abc12345", kind), (Words{"abc", "1", "2", "3", "4", "5"}));
  EXPECT_EQ(split("abc12345", PreTokenizer::Llama3), (Words{"abc", "123", "45"}));
  EXPECT_EQ(split("a\n\nb", kind), (Words{"a", "\n\n", "b"}));
  EXPECT_EQ(split("x  \n  y", kind), (Words{"x", "  \n", " ", " y"}));
  EXPECT_EQ(split("hello!!\n\nworld", kind), (Words{"hello", "!!\n\n", "world"}));
  EXPECT_EQ(split("\tfoo", kind), (Words{"\tfoo"}));  // any non-newline lead joins the letters
  EXPECT_EQ(split("(foo) $$$ x", kind), (Words{"(foo", ")", " $$$", " x"}));
  EXPECT_EQ(split("tail  ", kind), (Words{"tail", "  "}));
}

TEST(TokenizerPreTokenizer, RecognisesRegexes) {
  for (PreTokenizer kind : {PreTokenizer::Gpt2, PreTokenizer::Qwen2, PreTokenizer::Llama3})
    EXPECT_EQ(pre_tokenizer_for_regex(pre_tokenizer_regex(kind)), kind);
  EXPECT_FALSE(pre_tokenizer_for_regex("\\w+").has_value());
  EXPECT_EQ(pre_tokenizer_for_gguf_name("qwen2"), PreTokenizer::Qwen2);
  EXPECT_FALSE(pre_tokenizer_for_gguf_name("unknown-pre").has_value());
}

TEST(Tokenizer, EmbeddedModelMatchesReference) {
  check_reference(source_path("models/tiny-mixtral"));
}

TEST(Tokenizer, SharedModelsMatchReference) {
  MOENAV_REQUIRE_SHARED("models/tiny-mixtral/reference.json");
  MOENAV_REQUIRE_SHARED("models/tiny-qwen3-moe/reference.json");
  check_reference(shared_path("models/tiny-mixtral"));
  check_reference(shared_path("models/tiny-qwen3-moe"));
}

TEST(Tokenizer, SpecialTokensAndConfig) {
  auto tokenizer = Tokenizer::from_hf_directory(source_path("models/tiny-mixtral"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.error();
  EXPECT_EQ(tokenizer->vocab_size(), 4096);
  EXPECT_EQ(tokenizer->bos_id(), 0);  // tokenizer_config.json: <|endoftext|>
  EXPECT_EQ(tokenizer->eos_id(), 0);
  EXPECT_FALSE(tokenizer->add_bos_by_default());
  EXPECT_FALSE(tokenizer->chat_template().has_value());
  EXPECT_EQ(tokenizer->token_id("<|endoftext|>"), 0);
  EXPECT_EQ(tokenizer->token_id("\xC4\xA0the"), 261);  // "Ġthe" (second greedy prompt)
  EXPECT_EQ(tokenizer->piece(261), "\xC4\xA0the");
  EXPECT_TRUE(tokenizer->is_special(0));
  EXPECT_FALSE(tokenizer->is_special(261));

  // The added token is cut out of the text before pre-tokenization.
  const std::vector<int32_t> hello = tokenizer->encode("Hello world");
  std::vector<int32_t> expected = hello;
  expected.push_back(0);
  expected.insert(expected.end(), hello.begin(), hello.end());
  EXPECT_EQ(tokenizer->encode("Hello world<|endoftext|>Hello world"), expected);
  EXPECT_EQ(tokenizer->decode(expected), "Hello world<|endoftext|>Hello world");

  std::vector<int32_t> with_bos = tokenizer->encode("Hello world", /*add_bos=*/true);
  EXPECT_EQ(with_bos.front(), 0);
  EXPECT_EQ(std::vector<int32_t>(with_bos.begin() + 1, with_bos.end()), hello);
  EXPECT_EQ(tokenizer->decode_token(261), " the");
  EXPECT_EQ(tokenizer->decode_token(-1), "");
  EXPECT_EQ(tokenizer->decode_token(4096), "");
}

TEST(Tokenizer, ArbitraryBytesRoundTrip) {
  auto tokenizer = Tokenizer::from_tokenizer_json(source_path("models/tiny-mixtral/tokenizer.json"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.error();
  EXPECT_FALSE(tokenizer->bos_id().has_value());  // no config: the post-processor adds nothing
  std::string bytes;
  for (int byte = 0; byte < 256; ++byte) bytes.push_back(static_cast<char>(byte));
  bytes += " \xE6\x97\xA5\xE6\x9C\xAC <|endof \xF0\x9F\x98\x80 \xC3";  // 日本, emoji, cut UTF-8
  EXPECT_EQ(tokenizer->decode(tokenizer->encode(bytes)), bytes);
  EXPECT_TRUE(tokenizer->encode("").empty());
}

// encode is const and shares the word cache; concurrent callers must see the same ids.
TEST(Tokenizer, ConcurrentEncodeIsConsistent) {
  auto tokenizer = Tokenizer::from_tokenizer_json(source_path("models/tiny-mixtral/tokenizer.json"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.error();
  std::string text;
  for (int index = 0; index < 3000; ++index)
    text += " word" + std::to_string(index * 7919 % 1000) + (index % 13 == 0 ? ".\n" : ",");
  const std::vector<int32_t> expected = tokenizer->encode(text);
  std::vector<std::vector<int32_t>> results(4);
  std::vector<std::thread> threads;
  for (auto& result : results)
    threads.emplace_back([&] { result = tokenizer->encode(text); });
  for (auto& thread : threads) thread.join();
  for (const auto& result : results) EXPECT_EQ(result, expected);
}

// The protocol of reference.json: the whole file is one encode call, no BOS.
void check_wikitext(const Tokenizer& tokenizer, const std::string& split_name, size_t expected) {
  const std::string text = read_file(shared_path("data/wikitext-2/" + split_name));
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tokenizer.encode(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("[ timing ] encode %s: %zu bytes -> %zu tokens in %.3f s (%.1f MB/s)\n",
              split_name.c_str(), text.size(), ids.size(), seconds, text.size() / seconds / 1e6);
  EXPECT_EQ(ids.size(), expected) << split_name;
  EXPECT_TRUE(tokenizer.decode(ids) == text) << split_name << " does not round-trip";
}

TEST(Tokenizer, WikiText2TokenCounts) {
  MOENAV_REQUIRE_SHARED("data/wikitext-2/test.txt");
  MOENAV_REQUIRE_SHARED("data/wikitext-2/valid.txt");
  for (const char* model : {"models/tiny-mixtral", "models/tiny-qwen3-moe"}) {
    SCOPED_TRACE(model);
    auto tokenizer = Tokenizer::from_hf_directory(shared_path(model));
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.error();
    check_wikitext(*tokenizer, "valid.txt", 317905);
    check_wikitext(*tokenizer, "test.txt", 360590);
  }
}

// --- SentencePiece vocabularies in tokenizer.json (Llama 2 / Mistral / Mixtral form) ---------

// Ids: 0 <unk>, 1 <s>, 2 </s>, 3 ▁, 4 h, 5 e, 6 l, 7 o, 8 w, 9 r, 10 d, 11 he, 12 ll, 13 llo,
// 14 hello, 15 ▁hello, 16 ▁w, 17 or, 18 ▁wor, 19 ld, 20 ▁world, 21 <0xC3>, 22 <0xA9>.
// Merges, best first: h e, l l, ll o, he llo, ▁ hello, ▁ w, o r, ▁w or, l d, ▁wor ld.
nlohmann::json sentencepiece_tokenizer_json(bool legacy_normalizer) {
  const std::string space = "\xE2\x96\x81";
  const std::vector<std::string> pieces = {
      "<unk>", "<s>",        "</s>",        space,  "h",           "e",        "l",         "o",
      "w",     "r",          "d",           "he",   "ll",          "llo",      "hello",     space + "hello",
      space + "w", "or",     space + "wor", "ld",   space + "world", "<0xC3>", "<0xA9>"};
  nlohmann::json vocab = nlohmann::json::object();
  for (size_t id = 0; id < pieces.size(); ++id) vocab[pieces[id]] = id;
  nlohmann::json root;
  root["model"] = {{"type", "BPE"},
                   {"vocab", vocab},
                   {"merges", {"h e", "l l", "ll o", "he llo", space + " hello", space + " w", "o r",
                               space + "w or", "l d", space + "wor ld"}},
                   {"byte_fallback", true},
                   {"fuse_unk", true},
                   {"unk_token", "<unk>"}};
  root["added_tokens"] = nlohmann::json::array();
  for (int id = 0; id < 3; ++id)
    root["added_tokens"].push_back({{"id", id}, {"content", pieces[id]}, {"special", true}});
  if (legacy_normalizer) {
    root["normalizer"] = nlohmann::json::parse(R"({"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]})");
    root["pre_tokenizer"] = nullptr;
  } else {
    root["normalizer"] = nullptr;
    root["pre_tokenizer"] = nlohmann::json::parse(
        R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": true})");
  }
  root["post_processor"] = nlohmann::json::parse(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
      "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}})");
  return root;
}

using Ids = std::vector<int32_t>;

TEST(TokenizerSentencePieceJson, LegacyNormalizers) {
  ScratchDir scratch;
  auto tokenizer = Tokenizer::from_tokenizer_json(
      scratch.file("tokenizer.json", sentencepiece_tokenizer_json(/*legacy_normalizer=*/true).dump()));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.error();
  EXPECT_EQ(tokenizer->bos_id(), 1);
  EXPECT_TRUE(tokenizer->add_bos_by_default());
  // "▁hello▁world": h e, l l, ll o, he llo, ▁ hello, ▁ w, o r, ▁w or, l d, ▁wor ld.
  EXPECT_EQ(tokenizer->encode("hello world"), (Ids{15, 20}));
  // Prepend adds "▁" even before a space, and to the fragment after an added token.
  EXPECT_EQ(tokenizer->encode(" hello"), (Ids{3, 15}));
  EXPECT_EQ(tokenizer->encode("<s>hello"), (Ids{1, 15}));
  // é has no piece: byte fallback to <0xC3> <0xA9>.
  EXPECT_EQ(tokenizer->encode("h\xC3\xA9"), (Ids{3, 4, 21, 22}));
  // ü (C3 BC) has no <0xBC>: not all bytes exist, so it is <unk>; two in a row fuse into one.
  EXPECT_EQ(tokenizer->encode("h\xC3\xBC\xC3\xBC"), (Ids{3, 4, 0}));
  EXPECT_EQ(tokenizer->decode({15, 20}), "hello world");
  EXPECT_EQ(tokenizer->decode({1, 15, 2, 3, 15}), "<s>hello</s> hello");
  for (const char* text : {"hello world", " hello  world ", "h\xC3\xA9<s>hello", "</s> world"})
    EXPECT_EQ(tokenizer->decode(tokenizer->encode(text)), text) << text;
}

TEST(TokenizerSentencePieceJson, MetaspacePrependFirst) {
  ScratchDir scratch;
  auto tokenizer = Tokenizer::from_tokenizer_json(
      scratch.file("tokenizer.json", sentencepiece_tokenizer_json(/*legacy_normalizer=*/false).dump()));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.error();
  EXPECT_EQ(tokenizer->encode("hello world"), (Ids{15, 20}));  // words "▁hello", "▁world"
  EXPECT_EQ(tokenizer->encode(" hello"), (Ids{15}));  // no second "▁" before a space
  // "first": only the start of the text gets "▁"; after <s> "hello" merges without it.
  EXPECT_EQ(tokenizer->encode("<s>hello"), (Ids{1, 14}));
  EXPECT_EQ(tokenizer->encode("hello", /*add_bos=*/true), (Ids{1, 15}));
  EXPECT_EQ(tokenizer->decode({1, 15}), "<s>hello");  // the "▁" after a leading BOS is dropped
  EXPECT_EQ(tokenizer->decode({1, 14}), "<s>hello");
  EXPECT_EQ(tokenizer->decode({15, 2, 20}), "hello</s> world");
}

// --- errors ---------------------------------------------------------------------------------

TEST(TokenizerErrors, MissingFile) {
  auto missing = Tokenizer::from_tokenizer_json("/nonexistent/dir/tokenizer.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().find("/nonexistent/dir/tokenizer.json"), std::string::npos)
      << missing.error();
  auto no_dir = Tokenizer::from_hf_directory("/nonexistent/model");
  ASSERT_FALSE(no_dir.ok());
  EXPECT_NE(no_dir.error().find("/nonexistent/model/tokenizer.json"), std::string::npos)
      << no_dir.error();
}

TEST(TokenizerErrors, CorruptJson) {
  ScratchDir scratch;
  const std::string good = read_file(source_path("models/tiny-mixtral/tokenizer.json"));
  const std::string truncated = scratch.file("truncated.json", good.substr(0, good.size() / 2));
  auto result = Tokenizer::from_tokenizer_json(truncated);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.error().find(truncated), std::string::npos) << result.error();
  EXPECT_NE(result.error().find("invalid JSON"), std::string::npos) << result.error();

  struct Case {
    const char* json;
    const char* expected_message;
  };
  const Case cases[] = {
      {"[1, 2]", "JSON object"},
      {R"({"version": "1.0"})", "no 'model' section"},
      {R"({"model": {"type": "WordPiece", "vocab": {}}})", "model type 'WordPiece'"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]},
           "pre_tokenizer": {"type": "ByteLevel"}})",
       "'b', which is not in the vocabulary"},
      {R"({"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []},
           "pre_tokenizer": {"type": "ByteLevel"}})",
       "unexpected structure"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
           "pre_tokenizer": {"type": "WhitespaceSplit"}})",
       "pre_tokenizer type 'WhitespaceSplit'"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
           "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "ByteLevel"}})",
       "normalizer '{\"type\":\"Lowercase\"}' is not supported"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": null})",
       "neither byte-level"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
           "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\w+"}}})",
       "Split pattern"},
      {R"({"model": {"type": "BPE", "vocab": {"a": -4}, "merges": []},
           "pre_tokenizer": {"type": "ByteLevel"}})",
       "has id -4"},
  };
  for (const Case& test_case : cases) {
    const std::string path = scratch.file("tokenizer.json", test_case.json);
    auto loaded = Tokenizer::from_tokenizer_json(path);
    ASSERT_FALSE(loaded.ok()) << test_case.json;
    EXPECT_NE(loaded.error().find(path), std::string::npos) << loaded.error();
    EXPECT_NE(loaded.error().find(test_case.expected_message), std::string::npos)
        << loaded.error();
  }
}

// Flipped bytes anywhere in a tokenizer.json must give an error or a working tokenizer, never
// a crash (the parser is exercised through the JSON library's own checks and ours).
TEST(TokenizerErrors, MutatedJsonNeverCrashes) {
  ScratchDir scratch;
  const std::string original = sentencepiece_tokenizer_json(true).dump();
  std::mt19937 random(1234);
  const char replacements[] = {'"', '{', '}', '[', ']', ',', ':', '0', '9', '-', ' ', 'x', '\xE2'};
  for (int trial = 0; trial < 300; ++trial) {
    std::string mutated = original;
    for (int flip = 0; flip < 1 + trial % 3; ++flip)
      mutated[random() % mutated.size()] = replacements[random() % sizeof(replacements)];
    const std::string path = scratch.file("tokenizer.json", mutated);
    auto loaded = Tokenizer::from_tokenizer_json(path);
    if (loaded.ok()) {
      const auto ids = loaded->encode("hello world <s> h\xC3\xA9");
      (void)loaded->decode(ids);
    } else {
      EXPECT_NE(loaded.error().find(path), std::string::npos) << loaded.error();
    }
  }
}

TEST(TokenizerErrors, ConfigNamesUnknownToken) {
  ScratchDir scratch;
  scratch.file("tokenizer.json", read_file(source_path("models/tiny-mixtral/tokenizer.json")));
  const std::string config =
      scratch.file("tokenizer_config.json", R"({"bos_token": "<s>", "eos_token": null})");
  auto loaded = Tokenizer::from_hf_directory(scratch.path());
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.error().find(config), std::string::npos) << loaded.error();
  EXPECT_NE(loaded.error().find("bos_token '<s>'"), std::string::npos) << loaded.error();
}

TEST(Tokenizer, ConfigChatTemplateAndBosFromPostProcessor) {
  ScratchDir scratch;
  auto tokenizer_json = nlohmann::json::parse(read_file(source_path("models/tiny-mixtral/tokenizer.json")));
  tokenizer_json["post_processor"] = nlohmann::json::parse(R"({
      "type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}}],
      "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0],
                                           "tokens": ["<|endoftext|>"]}}})");
  scratch.file("tokenizer.json", tokenizer_json.dump());
  scratch.file("tokenizer_config.json",
               R"({"eos_token": {"content": "<|endoftext|>"}, "chat_template": "{{ messages }}"})");
  auto tokenizer = Tokenizer::from_hf_directory(scratch.path());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.error();
  EXPECT_EQ(tokenizer->bos_id(), 0);
  EXPECT_TRUE(tokenizer->add_bos_by_default());
  EXPECT_EQ(tokenizer->eos_id(), 0);
  EXPECT_EQ(tokenizer->chat_template(), "{{ messages }}");
}

}  // namespace
}  // namespace moenav
