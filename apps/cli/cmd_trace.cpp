// `moenav trace MODEL --file TEXT -o trace.bin [--stats stats.json]`: runs the text through the
// model and records every MoE layer's routing (and next-layer gate speculation) to a trace file,
// with routing statistics for placement, warm starts and pruning calibration.
// `moenav simulate MODEL --trace trace.bin [engine options]`: replays a trace through the expert
// cache the options describe and prints the predicted hits, misses and bytes moved, without
// running the model (--sizes / --policies sweep several caches in one go).
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "cli/options.h"
#include "core/thread_pool.h"
#include "experts/cache_simulator.h"
#include "experts/routing_trace.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace moenav::cli {
namespace {

struct TraceArgs {
  EngineOptions engine;
  std::string file;
  std::string output;
  std::string stats;
  int64_t max_tokens = 65536;
  int64_t seq = 512;
  int64_t step_tokens = 1;
  int speculate_depth = 1;
};

int run_trace(TraceArgs& args) {
  std::ifstream stream(args.file, std::ios::binary);
  if (!stream) return fail(Status::errorf("{}: cannot open text file", args.file));
  std::ostringstream text;
  text << stream.rdbuf();
  std::unique_ptr<Engine> engine = open_engine(args.engine);
  if (!engine) return 1;
  if (Status status = engine->require_tokenizer(); !status.ok()) return fail(status);
  std::vector<int32_t> tokens = engine->tokenizer().encode(text.str(), false);
  if (args.max_tokens > 0 && static_cast<int64_t>(tokens.size()) > args.max_tokens) tokens.resize(static_cast<size_t>(args.max_tokens));
  if (args.seq > engine->context_length()) {
    return fail(Status::errorf("--seq {} exceeds the context length {}", args.seq, engine->context_length()));
  }
  auto writer = RoutingTraceWriter::open(args.output, engine->model(), args.speculate_depth);
  if (!writer.ok()) return fail(writer.status());
  engine->expert_store().set_trace(writer->get());
  const auto total = static_cast<int64_t>(tokens.size());
  for (int64_t begin = 0; begin < total; begin += args.seq) {
    auto session = engine->new_session();
    const int64_t end = std::min(total, begin + args.seq);
    for (int64_t position = begin; position < end; position += args.step_tokens) {
      const int64_t count = std::min(args.step_tokens, end - position);
      auto logits = engine->evaluate(*session, std::span<const int32_t>(tokens).subspan(
                                                   static_cast<size_t>(position), static_cast<size_t>(count)));
      if (!logits.ok()) return fail(logits.status());
    }
    fmt::print(stderr, "\r[{}/{}] tokens traced", end, total);
  }
  fmt::print(stderr, "\n");
  engine->expert_store().set_trace(nullptr);
  if (Status status = (*writer)->close(); !status.ok()) return fail(status);
  if (!args.stats.empty()) {
    if (Status status = save_routing_stats(args.stats, (*writer)->stats()); !status.ok()) return fail(status);
  }
  fmt::print("{}: {} layer records, {} tokens, speculation depth {}{}\n", args.output, (*writer)->records(),
             (*writer)->stats().tokens, args.speculate_depth,
             args.stats.empty() ? "" : fmt::format("; statistics in {}", args.stats));
  return 0;
}

struct SimulateArgs {
  EngineOptions engine;
  std::string trace;
  std::vector<std::string> sizes;
  std::vector<std::string> policies;
  bool json = false;
};

int run_simulate(SimulateArgs& args) {
  auto config = resolve_config(args.engine);
  if (!config.ok()) return fail(config.status());
  auto model = load_model(args.engine.model);
  if (!model.ok()) return fail(model.status());
  auto trace = read_routing_trace(args.trace);
  if (!trace.ok()) return fail(trace.status());
  const ModelConfig& c = (*model)->config;
  const int64_t context = config->kv_cache.context > 0 ? config->kv_cache.context : c.context_length;
  const int threads = config->device.threads > 0 ? config->device.threads
                                                 : static_cast<int>(std::thread::hardware_concurrency());
  if (args.sizes.empty()) args.sizes = {config->placement.expert_cache.size};
  if (args.policies.empty()) args.policies = {config->placement.expert_cache.policy};
  nlohmann::json rows = nlohmann::json::array();
  if (!args.json) {
    fmt::print("{:<9} {:>6} {:>10} {:>10} {:>8} {:>12} {:>9} {:>9}\n", "policy", "size", "hits", "misses",
               "hit rate", "moved MiB", "prefetch", "accuracy");
  }
  for (const std::string& policy : args.policies) {
    for (const std::string& size : args.sizes) {
      EngineConfig point = *config;
      point.placement.expert_cache.policy = policy;
      point.placement.expert_cache.size = size;
      auto setup = resolve_cache_setup(**model, point, context, threads);
      if (!setup.ok()) return fail(setup.status());
      auto result = simulate_cache(*trace, *setup, c);
      if (!result.ok()) return fail(result.status());
      const ExpertCounters& counters = result->counters;
      rows.push_back({{"policy", policy}, {"size", size}, {"tokens", result->tokens},
                      {"counters", counters.to_json()}, {"plan", setup->plan.to_json()}});
      if (!args.json) {
        fmt::print("{:<9} {:>6} {:>10} {:>10} {:>7.1f}% {:>12.2f} {:>9} {:>8.1f}%\n", policy, size,
                   counters.fast_hits(), counters.fast_misses(), 100.0 * counters.hit_rate(),
                   counters.payload_bytes / 1048576.0, counters.prefetch_issued,
                   100.0 * counters.prefetch_accuracy());
      }
    }
  }
  if (args.json) fmt::print("{}\n", nlohmann::json{{"trace", args.trace}, {"tokens", trace->tokens()}, {"points", rows}}.dump());
  return 0;
}

}  // namespace

void register_trace(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<TraceArgs>();
  CLI::App* command = app.add_subcommand("trace", "Record a routing trace (and statistics) of a text");
  add_engine_options(*command, args->engine);
  command->add_option("-f,--file", args->file, "Text file (e.g. WikiText-2 valid.txt)")->required();
  command->add_option("-o,--output", args->output, "Trace file to write")->required();
  command->add_option("--stats", args->stats, "Also write routing statistics (JSON) here");
  command->add_option("--max-tokens", args->max_tokens, "Use only the first N tokens (0 = all)")
      ->check(CLI::NonNegativeNumber);
  command->add_option("--seq", args->seq, "Tokens per sequence (a new session each)")->check(CLI::PositiveNumber);
  command->add_option("--step-tokens", args->step_tokens,
                      "Tokens per forward pass: 1 records decode-like steps, more records prefill chunks")
      ->check(CLI::PositiveNumber);
  command->add_option("--speculate-depth", args->speculate_depth,
                      "Record next-layer gate speculation this many MoE layers ahead")
      ->check(CLI::Range(0, 16));
  command->callback([args, &exit_code] { exit_code = run_trace(*args); });

  auto simulate = std::make_shared<SimulateArgs>();
  CLI::App* sim = app.add_subcommand("simulate", "Predict expert-cache hits, misses and bytes from a trace");
  add_engine_options(*sim, simulate->engine);
  sim->add_option("--trace", simulate->trace, "Routing trace from `moenav trace`")->required();
  sim->add_option("--sizes", simulate->sizes, "Cache sizes to sweep (slots per layer or bytes)")->delimiter(',');
  sim->add_option("--policies", simulate->policies, "Cache policies to sweep")->delimiter(',');
  sim->add_flag("--json", simulate->json, "Print one JSON object");
  sim->callback([simulate, &exit_code] { exit_code = run_simulate(*simulate); });
}

}  // namespace moenav::cli
