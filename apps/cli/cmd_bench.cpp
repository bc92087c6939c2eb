// `moenav bench MODEL`: TTFT, TPOT, prefill and decode tokens/s, peak RSS, and the decode bound
// (weight bytes per token over measured memory bandwidth). --json prints one JSON object.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "cli/options.h"
#include "core/thread_pool.h"
#include "experts/expert_store.h"
#include "metrics/benchmark.h"
#include "metrics/memory.h"
#include "tokenizer/tokenizer.h"

namespace moenav::cli {
namespace {

struct BenchArgs {
  EngineOptions engine;
  BenchOptions options;
  std::string prompt_file;
  bool json = false;
};

// WikiText-2 test from ../shared when present, else the excerpt shipped in data/ (paths relative
// to the working directory, as from the repository root).
constexpr const char* kDefaultPromptFiles[] = {"../shared/data/wikitext-2/test.txt", "data/wikitext-2-test-head.txt"};

std::string default_prompt_file() {
  for (const char* candidate : kDefaultPromptFiles) {
    if (std::filesystem::exists(candidate)) return candidate;
  }
  return "";
}

int run_bench(BenchArgs& args) {
  if (args.prompt_file.empty()) args.prompt_file = default_prompt_file();
  if (args.prompt_file.empty()) {
    return fail(Status::errorf("no prompt text: neither {} nor {} exists here; give one with --prompt-file",
                               kDefaultPromptFiles[0], kDefaultPromptFiles[1]));
  }
  std::ifstream stream(args.prompt_file, std::ios::binary);
  if (!stream) return fail(Status::errorf("{}: cannot open prompt file (use --prompt-file)", args.prompt_file));
  std::ostringstream text;
  text << stream.rdbuf();
  std::unique_ptr<Engine> engine = open_engine(args.engine);
  if (!engine) return 1;
  if (Status status = engine->require_tokenizer(); !status.ok()) return fail(status);
  const std::string excerpt = text.str().substr(0, static_cast<size_t>(args.options.prompt_tokens) * 16);
  const std::vector<int32_t> source = engine->tokenizer().encode(excerpt, false);
  auto result = run_benchmark(*engine, source, args.options);
  if (!result.ok()) return fail(result.status());
  const double bandwidth = measure_read_bandwidth(engine->pool());
  nlohmann::json out = result->to_json();
  const double bound = bandwidth / static_cast<double>(result->decode_bytes_per_token);
  out["model"] = args.engine.model;
  out["threads"] = engine->pool().size();
  out["prompt_tokens"] = args.options.prompt_tokens;
  out["gen_tokens"] = args.options.gen_tokens;
  out["repetitions"] = args.options.repetitions;
  out["memory_read_bandwidth_gb_per_s"] = bandwidth / 1e9;
  out["decode_bound_tokens_per_second"] = bound;
  out["config"] = config_to_json(engine->config());
  // Expert store counters over the warm-up and measured runs together.
  const ExpertCounters counters = engine->expert_counters();
  const MemoryPlan& plan = engine->expert_store().memory_plan();
  out["experts"] = counters.to_json();
  out["experts"]["runs"] = args.options.warmup + args.options.repetitions;
  out["memory_plan"] = plan.to_json();
  if (args.json) {
    fmt::print("{}\n", out.dump());
    return 0;
  }
  auto median = [&](const char* key) { return out[key]["median"].get<double>(); };
  auto spread = [&](const char* key) {
    return fmt::format("[{:.1f} .. {:.1f}]", out[key]["min"].get<double>(), out[key]["max"].get<double>());
  };
  fmt::print("model {}  threads {}  prompt {}  generated {}  reps {}\n", args.engine.model,
             engine->pool().size(), args.options.prompt_tokens, args.options.gen_tokens, args.options.repetitions);
  fmt::print("TTFT    {:10.2f} ms        {}\n", median("ttft_ms"), spread("ttft_ms"));
  fmt::print("TPOT    {:10.3f} ms        {}\n", median("tpot_ms"), spread("tpot_ms"));
  fmt::print("prefill {:10.1f} tokens/s  {}\n", median("prefill_tokens_per_second"), spread("prefill_tokens_per_second"));
  fmt::print("decode  {:10.1f} tokens/s  {}\n", median("decode_tokens_per_second"), spread("decode_tokens_per_second"));
  fmt::print("decode bound {:.1f} tokens/s = {:.1f} GB/s measured read bandwidth / {:.2f} MB of weights per token "
             "({:.0f}% of bound)\n", bound, bandwidth / 1e9, result->decode_bytes_per_token / 1e6,
             100.0 * median("decode_tokens_per_second") / bound);
  double total = 0.0;
  for (double seconds : result->stages.seconds) total += seconds;
  fmt::print("time by stage:");
  for (size_t i = 0; i < kStageNames.size(); ++i) {
    if (result->stages.seconds[i] > 0) fmt::print(" {} {:.1f}%", kStageNames[i], 100.0 * result->stages.seconds[i] / total);
  }
  fmt::print("\npeak RSS {:.1f} MiB\n", result->peak_rss_bytes / 1048576.0);
  if (result->gpu_peak_bytes >= 0) fmt::print("peak GPU memory {:.1f} MiB (allocator high-water)\n", result->gpu_peak_bytes / 1048576.0);
  if (result->gpu_process_bytes >= 0) fmt::print("GPU memory of this process {:.1f} MiB (NVML, at the end)\n", result->gpu_process_bytes / 1048576.0);
  fmt::print("{}\n", plan.to_string());
  fmt::print("experts ({} runs): {} hits, {} misses ({:.1f}% hit rate); misses fetched {}, staged {}, cpu {} "
             "(split {}), lowbit {}, skipped {}; evictions {}\n", args.options.warmup + args.options.repetitions,
             counters.fast_hits(), counters.fast_misses(), 100.0 * counters.hit_rate(), counters.miss_fetched,
             counters.miss_staged, counters.miss_cpu, counters.miss_split, counters.miss_lowbit,
             counters.miss_skipped, counters.evictions);
  fmt::print("expert bytes: disk->host {:.2f} MB (payload {:.2f} MB); stalled {:.3f} s; I/O busy {:.3f} s; "
             "prefetch issued {}, used {}, wasted {}, late {} (accuracy {:.1f}%)\n",
             counters.disk_to_host_bytes / 1e6, counters.payload_bytes / 1e6, counters.stall_seconds,
             counters.io_seconds, counters.prefetch_issued, counters.prefetch_used, counters.prefetch_wasted,
             counters.prefetch_late, 100.0 * counters.prefetch_accuracy());
  return 0;
}

}  // namespace

void register_bench(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* command = app.add_subcommand("bench", "Measure TTFT, TPOT, throughput and memory");
  add_engine_options(*command, args->engine);
  command->add_option("--prompt-tokens", args->options.prompt_tokens, "Prompt length")->check(CLI::PositiveNumber);
  command->add_option("--gen-tokens", args->options.gen_tokens, "Tokens generated")->check(CLI::PositiveNumber);
  command->add_option("--reps", args->options.repetitions, "Measured repetitions")->check(CLI::PositiveNumber);
  command->add_option("--warmup", args->options.warmup, "Warm-up runs")->check(CLI::NonNegativeNumber);
  command->add_option("--prompt-file", args->prompt_file, "Text to take the prompt from");
  command->add_flag("--json", args->json, "Print one JSON object");
  command->callback([args, &exit_code] { exit_code = run_bench(*args); });
}

}  // namespace moenav::cli
