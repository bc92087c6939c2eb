// `moenav generate MODEL -p TEXT -n N`: streams the continuation to stdout, timings to stderr.
#include <fmt/format.h>

#include "cli/options.h"
#include "runtime/generate.h"
#include "tokenizer/tokenizer.h"

namespace moenav::cli {
namespace {

struct GenerateArgs {
  EngineOptions engine;
  std::string prompt;
  int64_t max_tokens = 128;
  GenerationOptions generation;
  bool ignore_eos = false;
  bool print_ids = false;
};

int run_generate(GenerateArgs& args) {
  std::unique_ptr<Engine> engine = open_engine(args.engine);
  if (!engine) return 1;
  if (Status status = engine->require_tokenizer(); !status.ok()) return fail(status);
  const std::vector<int32_t> prompt = engine->tokenizer().encode(args.prompt, false);
  auto session = engine->new_session();
  args.generation.max_tokens = args.max_tokens;
  args.generation.stop_at_eos = !args.ignore_eos;
  Utf8Stream stream;
  std::fputs(args.prompt.c_str(), stdout);
  auto result = generate(*engine, *session, prompt, args.generation, [&](int32_t token) {
    std::fputs(stream.push(engine->tokenizer().decode_token(token)).c_str(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::fputs(stream.flush().c_str(), stdout);
  std::fputs("\n", stdout);
  if (!result.ok()) return fail(result.status());
  if (args.print_ids) {
    fmt::print(stderr, "prompt ids: [{}]\ngenerated ids: [{}]\n", fmt::join(prompt, ", "),
               fmt::join(result->tokens, ", "));
  }
  fmt::print(stderr,
             "prompt {} tokens, generated {} ({}); TTFT {:.1f} ms, TPOT {:.2f} ms ({:.1f} tokens/s)\n",
             prompt.size(), result->tokens.size(), result->stop_reason, result->ttft_seconds * 1e3,
             result->tpot_seconds() * 1e3,
             result->tpot_seconds() > 0 ? 1.0 / result->tpot_seconds() : 0.0);
  return 0;
}

}  // namespace

void register_generate(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* command = app.add_subcommand("generate", "Generate text from a prompt");
  add_engine_options(*command, args->engine);
  command->add_option("-p,--prompt", args->prompt, "Prompt text")->required();
  command->add_option("-n,--n-predict", args->max_tokens, "Tokens to generate")->check(CLI::NonNegativeNumber);
  command->add_option("--temp,--temperature", args->generation.sampling.temperature,
                      "Sampling temperature (0 = greedy)")->check(CLI::NonNegativeNumber);
  command->add_option("--top-k", args->generation.sampling.top_k, "Sample from the k most likely tokens (0 = all)")
      ->check(CLI::NonNegativeNumber);
  command->add_option("--top-p", args->generation.sampling.top_p, "Nucleus sampling mass")->check(CLI::Range(0.0, 1.0));
  command->add_option("--seed", args->generation.sampling.seed, "Random seed");
  command->add_flag("--ignore-eos", args->ignore_eos, "Keep generating past the end-of-text token");
  command->add_flag("--print-ids", args->print_ids, "Print prompt and generated token ids to stderr");
  command->callback([args, &exit_code] { exit_code = run_generate(*args); });
}

}  // namespace moenav::cli
