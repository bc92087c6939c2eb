// `moenav perplexity MODEL --file TEXT --seq N`: perplexity in the full or llama protocol.
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/options.h"
#include "metrics/perplexity.h"
#include "tokenizer/tokenizer.h"

namespace moenav::cli {
namespace {

struct PerplexityArgs {
  EngineOptions engine;
  std::string file;
  std::string protocol = "full";
  PerplexityOptions options;
  bool json = false;
};

Expected<std::string> read_text(const std::string& path) {
  std::ifstream stream(path, std::ios::binary);
  if (!stream) return Status::errorf("{}: cannot open text file", path);
  std::ostringstream text;
  text << stream.rdbuf();
  return text.str();
}

int run_perplexity(PerplexityArgs& args) {
  args.options.protocol = args.protocol == "llama" ? PerplexityProtocol::Llama : PerplexityProtocol::Full;
  auto text = read_text(args.file);
  if (!text.ok()) return fail(text.status());
  std::unique_ptr<Engine> engine = open_engine(args.engine);
  if (!engine) return 1;
  if (Status status = engine->require_tokenizer(); !status.ok()) return fail(status);
  const std::vector<int32_t> tokens = engine->tokenizer().encode(*text, false);
  auto result = perplexity(*engine, tokens, args.options, [&](int64_t done, int64_t total, double ppl) {
    if (!args.json) fmt::print(stderr, "\r[{}/{}] ppl {:.4f}", done, total, ppl);
  });
  if (!args.json) fmt::print(stderr, "\n");
  if (!result.ok()) return fail(result.status());
  if (args.json) {
    nlohmann::json out = {{"ppl", result->ppl},           {"scored_tokens", result->scored_tokens},
                          {"windows", result->windows},   {"seq", args.options.seq},
                          {"protocol", args.protocol},    {"text_tokens", tokens.size()},
                          {"seconds", result->seconds},
                          {"tokens_per_second", result->windows * args.options.seq / result->seconds}};
    fmt::print("{}\n", out.dump());
  } else {
    fmt::print("perplexity {:.6f} over {} scored tokens ({} windows of {}, {} protocol) in {:.1f} s\n",
               result->ppl, result->scored_tokens, result->windows, args.options.seq, args.protocol,
               result->seconds);
  }
  return 0;
}

}  // namespace

void register_perplexity(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<PerplexityArgs>();
  CLI::App* command = app.add_subcommand("perplexity", "Perplexity of a text file");
  add_engine_options(*command, args->engine);
  command->add_option("-f,--file", args->file, "Text file (e.g. WikiText-2 test.txt)")->required();
  command->add_option("--seq", args->options.seq, "Window length in tokens")->check(CLI::PositiveNumber);
  command->add_option("--max-tokens", args->options.max_tokens, "Use only the first N tokens (0 = all)")
      ->check(CLI::NonNegativeNumber);
  command->add_option("--protocol", args->protocol, "full: every prediction; llama: second half of each window")
      ->check(CLI::IsMember({"full", "llama"}));
  command->add_flag("--json", args->json, "Print one JSON object");
  command->callback([args, &exit_code] { exit_code = run_perplexity(*args); });
}

}  // namespace moenav::cli
