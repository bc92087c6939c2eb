#include "tune/profiler.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "layers/moe/router.h"
#include "metrics/memory.h"
#include "metrics/perplexity.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace moenav::tune {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Counts routed experts per (token, MoE layer) while a workload runs.
struct ExpertCounter {
  int64_t slots = 0;
  int64_t token_layers = 0;
  void observe(const Routing& routing) {
    token_layers += routing.n_tokens;
    for (int32_t expert : routing.experts) slots += expert >= 0 ? 1 : 0;
  }
  double mean() const { return token_layers ? static_cast<double>(slots) / static_cast<double>(token_layers) : NAN; }
};

}  // namespace

Expected<TextSource> load_text_source(const std::string& explicit_path) {
  struct Candidate { const char* path; const char* name; };
  static constexpr Candidate kCandidates[] = {
      {"../shared/data/wikitext-2/test.txt", "WikiText-2 test (../shared/data/wikitext-2/test.txt)"},
      {"data/wikitext-2-test-head.txt",
       "WikiText-2 test, first 16 KiB only (data/wikitext-2-test-head.txt; ../shared/data is absent)"},
  };
  TextSource source;
  if (!explicit_path.empty()) {
    source.path = explicit_path;
    source.name = explicit_path;
  } else {
    for (const Candidate& candidate : kCandidates) {
      if (std::filesystem::exists(candidate.path)) {
        source.path = candidate.path;
        source.name = candidate.name;
        break;
      }
    }
    if (source.path.empty()) {
      return Status::error("no workload text: neither ../shared/data/wikitext-2/test.txt nor "
                           "data/wikitext-2-test-head.txt exists here (run from the repository root or use --text)");
    }
  }
  std::ifstream stream(source.path, std::ios::binary);
  if (!stream) return Status::errorf("{}: cannot open the workload text", source.path);
  std::ostringstream text;
  text << stream.rdbuf();
  source.text = text.str();
  return source;
}

nlohmann::json Workload::to_json() const {
  return {{"prompt_tokens", bench.prompt_tokens}, {"gen_tokens", bench.gen_tokens},
          {"repetitions", bench.repetitions},     {"warmup", bench.warmup},
          {"source", source_name}};
}

nlohmann::json QualityWorkload::to_json() const {
  return {{"seq", seq}, {"max_tokens", max_tokens}, {"source", source_name},
          {"scored_windows", std::min<int64_t>(static_cast<int64_t>(tokens.size()), max_tokens) / seq}};
}

bool reset_peak_rss() {
  // Memory the previous point freed but malloc kept would count toward this point's peak.
  malloc_trim(0);
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  return static_cast<bool>(clear);
}

Status Profiler::check_effective(const Engine& engine, const EngineConfig& config) {
  if (config.weights.type.empty()) return ok_status();
  const auto wanted = dtype_from_name(config.weights.type);
  if (!wanted) return Status::errorf("weights.type '{}' is not a known type", config.weights.type);
  const ModelConfig& model = engine.model_config();
  for (int64_t layer = 0; layer < model.n_layers; ++layer) {
    if (!model.is_moe_layer(layer)) continue;
    const DType found = engine.model().weights.layers[static_cast<size_t>(layer)].experts[0].gate.dtype;
    if (found != *wanted) {
      return Status::errorf("weights.type '{}' was accepted but the experts are still {}: this build "
                            "does not convert weights at load", config.weights.type, dtype_name(found));
    }
    break;
  }
  return ok_status();
}

Expected<std::unique_ptr<Engine>> Profiler::open(const EngineConfig& config) {
  auto engine = Engine::create(model_path_, config);
  if (!engine.ok()) return engine.status();
  MOENAV_RETURN_IF_ERROR(check_effective(**engine, config));
  return std::move(engine).value();
}

ProfileOutcome Profiler::measure(const EngineConfig& config, const Workload& workload) {
  ProfileOutcome outcome;
  const auto start = Clock::now();
  reset_peak_rss();
  auto engine = open(config);
  if (!engine.ok()) return {"unavailable", engine.error(), {}};
  ExpertCounter counter;
  (*engine)->set_routing_observer([&counter](int64_t, const Routing& routing) { counter.observe(routing); });
  auto result = run_benchmark(**engine, workload.prompt_source, workload.bench);
  if (!result.ok()) return {"error", result.error(), {}};
  Measurement& m = outcome.measurement;
  std::vector<double> ttft, tpot;
  for (const BenchSample& sample : result->samples) {
    ttft.push_back(sample.ttft_seconds);
    tpot.push_back(sample.tpot_seconds);
  }
  const Summary ttft_summary = summarize(ttft), tpot_summary = summarize(tpot);
  m.ttft_s = ttft_summary.median;
  m.ttft_min_s = ttft_summary.min;
  m.ttft_max_s = ttft_summary.max;
  m.tpot_s = tpot_summary.median;
  m.tpot_min_s = tpot_summary.min;
  m.tpot_max_s = tpot_summary.max;
  m.gen_tokens = workload.bench.gen_tokens;
  m.peak_rss_bytes = peak_rss_bytes();
  m.gpu_peak_bytes = result->gpu_peak_bytes;
  m.weight_bytes = (*engine)->model().total_bytes();
  m.resident_expert_bytes = (*engine)->model().expert_bytes();
  m.experts_per_token = counter.mean();
  m.seconds = seconds_since(start);
  outcome.status = "ok";
  return outcome;
}

ProfileOutcome Profiler::measure_quality(const EngineConfig& config, const QualityWorkload& workload) {
  ProfileOutcome outcome;
  const auto start = Clock::now();
  auto engine = open(config);
  if (!engine.ok()) return {"unavailable", engine.error(), {}};
  ExpertCounter counter;
  (*engine)->set_routing_observer([&counter](int64_t, const Routing& routing) { counter.observe(routing); });
  PerplexityOptions options;
  options.seq = workload.seq;
  options.max_tokens = workload.max_tokens;
  auto result = perplexity(**engine, workload.tokens, options);
  if (!result.ok()) return {"error", result.error(), {}};
  outcome.status = "ok";
  outcome.measurement.ppl = result->ppl;
  outcome.measurement.experts_per_token = counter.mean();
  outcome.measurement.seconds = seconds_since(start);
  outcome.measurement.gen_tokens = result->scored_tokens;
  return outcome;
}

Expected<RoutingTrace> Profiler::trace_routing(const EngineConfig& config, const std::vector<int32_t>& tokens) {
  MOENAV_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, open(config));
  const ModelConfig& model = engine->model_config();
  RoutingTrace trace;
  trace.n_experts = model.n_experts;
  for (int64_t layer = 0; layer < model.n_layers; ++layer) trace.n_layers += model.is_moe_layer(layer) ? 1 : 0;
  trace.k = config.routing.top_k > 0 ? config.routing.top_k : model.n_experts_used;
  // Decode one token at a time so the trace is in generation order, as a cache sees it.
  std::vector<int32_t> step;  // [layer][slot] of the current token
  std::vector<float> step_weights;
  engine->set_routing_observer([&](int64_t, const Routing& routing) {
    for (int64_t slot = 0; slot < routing.k; ++slot) {
      step.push_back(routing.expert(0, slot));
      step_weights.push_back(routing.weight(0, slot));
    }
  });
  auto session = engine->new_session();
  const size_t limit = std::min<size_t>(tokens.size(), static_cast<size_t>(engine->context_length()));
  for (size_t i = 0; i < limit; ++i) {
    step.clear();
    step_weights.clear();
    MOENAV_ASSIGN_OR_RETURN(std::vector<float> logits, engine->evaluate(*session, std::span<const int32_t>(&tokens[i], 1)));
    (void)logits;
    trace.experts.insert(trace.experts.end(), step.begin(), step.end());
    trace.weights.insert(trace.weights.end(), step_weights.begin(), step_weights.end());
  }
  return trace;
}

}  // namespace moenav::tune
