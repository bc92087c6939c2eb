// Weight types per tensor: the rule matching (globs, aliases, stacked expert names, fallbacks),
// conversion at load (weights.type / weights.rules) on Hugging Face and GGUF sources, and
// `moenav quantize` round trips that load back with the logits of the conversion at load.
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <filesystem>

#include "golden.h"
#include "io/gguf.h"
#include "model/gguf_export.h"
#include "model/model.h"
#include "model/weight_conversion.h"

namespace moenav::testing {
namespace {

std::string tiny_mixtral() { return source_path("models/tiny-mixtral"); }

std::string temp_gguf(const std::string& stem) {
  return (std::filesystem::temp_directory_path() / ("moenav_quantize_" + stem + ".gguf")).string();
}

std::vector<int32_t> reference_prompt() {
  const nlohmann::json reference = read_json(tiny_mixtral() + "/reference.json");
  return reference["greedy"][0]["prompt_ids"].get<std::vector<int32_t>>();
}

std::vector<float> prompt_logits(Engine& engine, const std::vector<int32_t>& tokens) {
  auto session = engine.new_session();
  auto logits = engine.evaluate(*session, tokens, /*all_logits=*/true);
  EXPECT_TRUE(logits.ok()) << logits.error();
  return logits.ok() ? *logits : std::vector<float>{};
}

// Positions whose top-1 token differs between two [positions, vocab] logit arrays.
int64_t argmax_mismatches(const std::vector<float>& a, const std::vector<float>& b, int64_t vocab) {
  int64_t mismatches = 0;
  for (size_t begin = 0; begin + vocab <= std::min(a.size(), b.size()); begin += static_cast<size_t>(vocab)) {
    mismatches += std::max_element(a.begin() + begin, a.begin() + begin + vocab) - a.begin() !=
                  std::max_element(b.begin() + begin, b.begin() + begin + vocab) - b.begin();
  }
  return mismatches;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0.0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) diff = std::max(diff, static_cast<double>(std::abs(a[i] - b[i])));
  return diff;
}

EngineConfig with_weights(const std::string& type, std::vector<TypeRule> rules = {}) {
  EngineConfig config;
  config.weights.type = type;
  config.weights.rules = std::move(rules);
  return config;
}

DType choose(const WeightTypePlan& plan, const std::string& name, Shape shape, DType current = DType::BF16) {
  return plan.choose(name, shape, current).type;
}

TEST(WeightTypes, PatternsAliasesAndStackedExpertNames) {
  EXPECT_TRUE(weight_pattern_matches("blk.*.attn_*", "blk.3.attn_q.weight"));
  EXPECT_FALSE(weight_pattern_matches("blk.*.attn_*", "blk.3.ffn_up_exps.weight"));
  EXPECT_TRUE(weight_pattern_matches("*exps*", "blk.0.ffn_down_exps.weight"));
  EXPECT_TRUE(weight_pattern_matches("exps", "blk.0.ffn_down_exps.weight"));  // substring
  EXPECT_TRUE(weight_pattern_matches("router", "blk.2.ffn_gate_inp.weight"));
  EXPECT_TRUE(weight_pattern_matches("experts", "blk.2.ffn_gate_exps.weight"));
  EXPECT_FALSE(weight_pattern_matches("experts", "blk.2.ffn_gate_shexp.weight"));
  EXPECT_TRUE(weight_pattern_matches("attention", "blk.5.attn_output.weight"));
  EXPECT_TRUE(weight_pattern_matches("output", "output.weight"));
  EXPECT_FALSE(weight_pattern_matches("output", "blk.0.attn_output.weight"));
  EXPECT_TRUE(weight_pattern_matches("embedding", "token_embd.weight"));
  EXPECT_EQ(stacked_expert_name("blk.3.ffn_gate.5.weight"), "blk.3.ffn_gate_exps.weight");
  EXPECT_EQ(stacked_expert_name("blk.3.ffn_gate.weight"), "blk.3.ffn_gate.weight");  // dense
}

TEST(WeightTypes, DefaultMixRulesAndFallbacks) {
  auto plan = WeightTypePlan::create("q4_k", {"attention=q6_k", "*exps*=q8_0", "experts=q4_0"});
  ASSERT_TRUE(plan.ok()) << plan.error();
  EXPECT_EQ(choose(*plan, "blk.0.attn_q.weight", {256, 256}), DType::Q6_K);
  // Per-expert names match the stacked pattern; the first matching rule decides.
  EXPECT_EQ(choose(*plan, "blk.0.ffn_up.3.weight", {192, 256}), DType::Q8_0);
  EXPECT_EQ(choose(*plan, "blk.0.ffn_up_exps.weight", {8, 192, 256}), DType::Q8_0);
  EXPECT_EQ(choose(*plan, "blk.0.ffn_gate_inp.weight", {8, 256}), DType::F32);  // router
  EXPECT_EQ(choose(*plan, "output.weight", {4096, 256}), DType::Q6_K);         // llama.cpp's mix
  EXPECT_EQ(choose(*plan, "token_embd.weight", {4096, 256}), DType::Q4_K);
  EXPECT_EQ(choose(*plan, "blk.0.attn_norm.weight", {256}), DType::F32);       // vectors
  // Rows that do not fill the type's blocks take the nearest type that fits, with a note.
  const WeightTypeChoice down = plan->choose("blk.0.ffn_down.weight", {256, 192}, DType::BF16);
  EXPECT_EQ(down.type, DType::Q4_0);
  EXPECT_NE(down.note.find("192"), std::string::npos) << down.note;
  auto q8 = WeightTypePlan::create("q8_0", {});
  ASSERT_TRUE(q8.ok());
  EXPECT_EQ(choose(*q8, "blk.0.attn_q.weight", {256, 200}, DType::BF16), DType::BF16);
  EXPECT_EQ(choose(*q8, "blk.0.attn_q.weight", {256, 200}, DType::F32), DType::F16);
  // Without a type, unmatched tensors keep theirs.
  auto rules_only = WeightTypePlan::create("", {"router=bf16"});
  ASSERT_TRUE(rules_only.ok());
  EXPECT_EQ(choose(*rules_only, "blk.0.attn_q.weight", {256, 256}, DType::Q8_0), DType::Q8_0);
  EXPECT_EQ(choose(*rules_only, "blk.0.ffn_gate_inp.weight", {8, 256}, DType::F32), DType::BF16);
}

TEST(WeightTypes, BadTypesAndRulesSayWhat) {
  auto bad_type = WeightTypePlan::create("q7_0", {});
  ASSERT_FALSE(bad_type.ok());
  EXPECT_NE(bad_type.error().find("q4_k"), std::string::npos) << bad_type.error();
  auto bad_rule = WeightTypePlan::create("q8_0", {"experts"});
  ASSERT_FALSE(bad_rule.ok());
  EXPECT_NE(bad_rule.error().find("PATTERN=TYPE"), std::string::npos) << bad_rule.error();
  auto engine = Engine::create(tiny_mixtral(), with_weights("q8_0", {{"experts", "q9_k"}}));
  ASSERT_FALSE(engine.ok());
  EXPECT_NE(engine.error().find("q9_k"), std::string::npos) << engine.error();
}

TEST(WeightConversion, Q8_0AtLoadReplacesViewsAndStaysCloseToBf16) {
  auto bf16 = open_engine(tiny_mixtral());
  auto q8_0 = open_engine(tiny_mixtral(), with_weights("q8_0"));
  ASSERT_TRUE(bf16 && q8_0);
  const ModelWeights& w = q8_0->model().weights;
  EXPECT_EQ(w.token_embedding.dtype, DType::Q8_0);
  EXPECT_EQ(w.output.dtype, DType::Q8_0);
  for (const LayerWeights& layer : w.layers) {
    EXPECT_EQ(layer.attn_q.dtype, DType::Q8_0);
    EXPECT_EQ(layer.attn_output.dtype, DType::Q8_0);
    EXPECT_EQ(layer.router.dtype, DType::F32);
    for (const FfnWeights& expert : layer.experts) {
      EXPECT_EQ(expert.gate.dtype, DType::Q8_0);
      EXPECT_EQ(expert.down.dtype, DType::Q8_0);
    }
  }
  // The index describes what runs: sizes shrink to Q8_0's 34 bytes per 32 weights.
  EXPECT_LT(q8_0->model().total_bytes(), bf16->model().total_bytes() * 6 / 10);
  const std::vector<int32_t> prompt = reference_prompt();
  const std::vector<float> expected = prompt_logits(*bf16, prompt);
  const std::vector<float> got = prompt_logits(*q8_0, prompt);
  // Activations are quantized to 8 bits too, so small differences grow through the layers: the
  // llama.cpp-converted Q8_0 file differs from bf16 by 0.24 at most on this prompt.
  EXPECT_LE(max_abs_diff(got, expected), 0.5);
  EXPECT_LE(argmax_mismatches(got, expected, bf16->vocab_size()), 1);
}

TEST(WeightConversion, RulesMatchExpertsOnHuggingFaceAndGguf) {
  const std::vector<TypeRule> rules = {{"attention", "q6_k"}, {"experts", "q4_k"}, {"router", "f32"}};
  std::vector<std::string> sources = {tiny_mixtral()};
  const std::string llama_cpp = shared_path("models/tiny-mixtral/llama.cpp/tiny-mixtral-q8_0.gguf");
  if (std::filesystem::exists(llama_cpp)) sources.push_back(llama_cpp);
  for (const std::string& source : sources) {
    auto engine = open_engine(source, with_weights("", rules));
    ASSERT_TRUE(engine) << source;
    const LayerWeights& layer = engine->model().weights.layers[3];
    EXPECT_EQ(layer.attn_k.dtype, DType::Q6_K) << source;
    EXPECT_EQ(layer.experts[5].up.dtype, DType::Q4_K) << source;
    EXPECT_EQ(layer.experts[5].down.dtype, DType::Q4_0) << source << " (192-wide rows)";
    EXPECT_EQ(layer.router.dtype, DType::F32) << source;
    // Untouched without a weights.type: the embedding keeps the file's type.
    EXPECT_EQ(engine->model().weights.token_embedding.dtype,
              engine->model().format == "gguf" ? DType::Q8_0 : DType::BF16) << source;
    auto session = engine->new_session();
    auto logits = engine->evaluate(*session, reference_prompt(), false);
    ASSERT_TRUE(logits.ok()) << logits.error();
  }
}

TEST(Quantize, Q8_0FileRunsLikeConversionAtLoad) {
  const std::string output = temp_gguf("q8_0");
  auto model = load_model(tiny_mixtral());
  ASSERT_TRUE(model.ok()) << model.error();
  auto plan = WeightTypePlan::create("q8_0", {});
  ASSERT_TRUE(plan.ok());
  const Status written = export_gguf(**model, output, *plan);
  ASSERT_TRUE(written.ok()) << written.message();
  auto file = open_engine(output);
  auto at_load = open_engine(tiny_mixtral(), with_weights("q8_0"));
  ASSERT_TRUE(file && at_load);
  ASSERT_TRUE(file->has_tokenizer());
  EXPECT_EQ(file->model().weights.layers[0].experts[2].gate.dtype, DType::Q8_0);
  // The same bytes, except the row order of q and k (Mixtral's GGUF "llama" permutes them for
  // interleaved RoPE).
  const Model& from_gguf = file->model();
  const Model& converted = at_load->model();
  for (int64_t l = 0; l < from_gguf.config.n_layers; ++l) {
    const LayerWeights& a = from_gguf.weights.layers[static_cast<size_t>(l)];
    const LayerWeights& b = converted.weights.layers[static_cast<size_t>(l)];
    std::vector<std::pair<TensorView, TensorView>> pairs = {{a.attn_v, b.attn_v}, {a.attn_output, b.attn_output}};
    for (size_t e = 0; e < a.experts.size(); ++e) {
      pairs.push_back({a.experts[e].gate, b.experts[e].gate});
      pairs.push_back({a.experts[e].down, b.experts[e].down});
    }
    for (const auto& [x, y] : pairs) {
      ASSERT_EQ(x.dtype, y.dtype);
      ASSERT_EQ(x.bytes(), y.bytes());
      EXPECT_EQ(std::memcmp(x.data, y.data, static_cast<size_t>(x.bytes())), 0) << "layer " << l;
    }
  }
  const std::vector<int32_t> prompt = reference_prompt();
  const std::vector<float> from_file = prompt_logits(*file, prompt);
  const std::vector<float> from_load = prompt_logits(*at_load, prompt);
  EXPECT_LE(max_abs_diff(from_file, from_load), 0.5);
  EXPECT_LE(argmax_mismatches(from_file, from_load, file->vocab_size()), 1);
  std::filesystem::remove(output);
}

TEST(Quantize, CommandWritesMixedRulesThatLoadAndGenerate) {
  const std::string output = temp_gguf("mixed");
  const std::string command = moenav_binary() + " quantize " + tiny_mixtral() + " -o " + output +
                              " --type q4_k --rule attention=q6_k --rule router=f32 2>/dev/null";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  auto gguf = GgufFile::open(output);
  ASSERT_TRUE(gguf.ok()) << gguf.error();
  EXPECT_EQ(gguf->get_string("general.architecture"), "llama");
  EXPECT_EQ(gguf->get_int("general.file_type"), 15);  // MOSTLY_Q4_K_M
  EXPECT_TRUE(gguf->has("tokenizer.ggml.merges"));
  const WeightIndex& tensors = gguf->weights();
  EXPECT_EQ(tensors.find("blk.1.attn_q.weight")->view.dtype, DType::Q6_K);
  EXPECT_EQ(tensors.find("blk.1.ffn_gate_exps.weight")->view.dtype, DType::Q4_K);
  EXPECT_TRUE(tensors.find("blk.1.ffn_gate_exps.weight")->view.shape == (Shape{8, 192, 256}));
  EXPECT_EQ(tensors.find("blk.1.ffn_down_exps.weight")->view.dtype, DType::Q4_0);
  EXPECT_EQ(tensors.find("blk.1.ffn_gate_inp.weight")->view.dtype, DType::F32);
  EXPECT_EQ(tensors.find("output.weight")->view.dtype, DType::Q6_K);
  auto engine = open_engine(output);
  ASSERT_TRUE(engine);
  const nlohmann::json reference = read_json(tiny_mixtral() + "/reference.json");
  const auto& entry = reference["greedy"][0];
  const auto expected = entry["greedy_ids"].get<std::vector<int32_t>>();
  const std::vector<int32_t> tokens = greedy(*engine, entry["prompt_ids"].get<std::vector<int32_t>>(), expected.size());
  ASSERT_EQ(tokens.size(), expected.size());
  EXPECT_EQ(tokens[0], expected[0]) << "the mixed 4/6-bit model should agree on the first token";
  std::filesystem::remove(output);
}

// A GGUF source keeps its metadata, and re-quantizing llama.cpp's Q8_0 as Q8_0 reproduces every
// block byte for byte.
TEST(Quantize, LlamaCppQ8_0RequantizesByteForByte) {
  MOENAV_REQUIRE_SHARED("models/tiny-mixtral/llama.cpp/tiny-mixtral-q8_0.gguf");
  const std::string source = shared_path("models/tiny-mixtral/llama.cpp/tiny-mixtral-q8_0.gguf");
  const std::string output = temp_gguf("requantized");
  auto model = load_model(source);
  ASSERT_TRUE(model.ok()) << model.error();
  auto plan = WeightTypePlan::create("q8_0", {});
  ASSERT_TRUE(plan.ok());
  ASSERT_TRUE(export_gguf(**model, output, *plan).ok());
  auto original = GgufFile::open(source);
  auto written = GgufFile::open(output);
  ASSERT_TRUE(original.ok() && written.ok());
  EXPECT_EQ(written->get_string_array("tokenizer.ggml.tokens"), original->get_string_array("tokenizer.ggml.tokens"));
  EXPECT_EQ(written->get_int("llama.block_count"), original->get_int("llama.block_count"));
  int compared = 0;
  for (const auto& [name, info] : original->weights().tensors()) {
    const TensorInfo* copy = written->weights().find(name);
    ASSERT_NE(copy, nullptr) << name;
    EXPECT_EQ(copy->view.dtype, info.view.dtype) << name;
    if (info.view.dtype != DType::Q8_0) continue;
    ASSERT_EQ(copy->bytes, info.bytes) << name;
    EXPECT_EQ(std::memcmp(copy->view.data, info.view.data, static_cast<size_t>(info.bytes)), 0) << name;
    ++compared;
  }
  EXPECT_GT(compared, 20);
  std::filesystem::remove(output);
}

}  // namespace
}  // namespace moenav::testing
