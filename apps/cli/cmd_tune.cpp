// `moenav tune MODEL --objective OBJ [--constraint EXPR ...]`: search the design space for the
// configuration that best meets the goal (src/tune/navigator.h), write it as an EngineConfig
// JSON every other command loads with --config, print the Pareto front, write the HTML report.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cli/options.h"
#include "report/report_builder.h"
#include "report/text_tables.h"
#include "tune/navigator.h"

namespace moenav::cli {
namespace {

struct TuneArgs {
  EngineOptions engine;
  tune::TuneOptions options;
  std::string space = "default";
  std::string output = "tuned.json";
  std::string report = "moenav-report.html";
  bool quiet = false;
};

void print_result(const tune::TuneResult& result, const TuneArgs& args) {
  const nlohmann::json& s = result.summary;
  fmt::print("moenav tune: {}\n", result.goal.describe());
  fmt::print("  model {}  ({} MoE layers of {} experts, top-{})\n", args.engine.model,
             s["model"]["description"].value("layers", 0), s["model"]["description"].value("experts", 0),
             s["model"]["description"].value("experts_per_token", 0));
  fmt::print("  hardware {}, {} cores, {} GiB\n", s["hardware"]["description"].value("cpu", "?"),
             s["hardware"]["description"].value("cores", 0), s["hardware"]["description"].value("memory_gib", 0));
  fmt::print("  space {} points; measured {} ({:.1f} %), {} at the full workload ({} new); {} perplexity pairs; {:.0f} s ({})\n",
             result.points.size(), result.measured_points,
             100.0 * static_cast<double>(result.measured_points) / static_cast<double>(result.points.size()), result.measured_full,
             result.measured_new, result.quality_pairs, result.seconds, args.options.exhaustive ? "exhaustive" : "successive halving");
  if (!result.scope.has_gpu) fmt::print("  memory: host peak RSS (no GPU in this build; gpu_mem goals are read as host_mem)\n");
  for (const std::string& note : result.notes) fmt::print("  note: {}\n", note);
  fmt::print("\nPareto front (measured at the full workload; * = recommended):\n{}\n", report::pareto_table(s));
}

void print_recommendation(const tune::TuneResult& result) {
  using tune::Metric;
  const tune::TunedPoint& rec = result.points[*result.recommended];
  const tune::TunedPoint& base = result.points[result.baseline];
  const tune::Measurement& m = *rec.full;
  const tune::Measurement& b = *base.full;
  const Metric memory = tune::effective_metric(Metric::GpuMemory, result.scope);
  fmt::print("Recommended: {}  ({}: measured, meets every constraint)\n", rec.point.label, result.goal.objective.text);
  fmt::print("  {:<10} {:>12}  {:>12}\n", "", "recommended", "baseline");
  auto line = [&](const char* name, Metric metric, double value, double base_value) {
    fmt::print("  {:<10} {:>12}  {:>12}\n", name, tune::format_value(metric, value), tune::format_value(metric, base_value));
  };
  line("latency", Metric::Latency, m.latency_s(), b.latency_s());
  line("TTFT", Metric::Ttft, m.ttft_s, b.ttft_s);
  line("TPOT", Metric::Tpot, m.tpot_s, b.tpot_s);
  line("throughput", Metric::Throughput, m.throughput(), b.throughput());
  line(tune::metric_info(memory).name.data(), memory, m.value(memory), b.value(memory));
  line("ppl", Metric::Perplexity, rec.ppl, base.ppl);
}

int run_tune_command(TuneArgs& args) {
  auto base = resolve_config(args.engine);
  if (!base.ok()) return fail(base.status());
  auto preset = tune::space_preset_from_name(args.space);
  if (!preset.ok()) return fail(preset.status());
  args.options.backend_given = option_given(args.engine, "device.backend");
  args.options.model_path = args.engine.model;
  args.options.base = *base;
  args.options.preset = *preset;
  args.options.progress = !args.quiet;
  auto result = tune::run_tune(args.options);
  if (!result.ok()) return fail(result.status());
  print_result(*result, args);
  int exit_code = 0;
  if (result->recommended) {
    print_recommendation(*result);
    const EngineConfig& config = result->points[*result->recommended].point.config;
    if (Status status = report::write_file(args.output, config_to_json(config).dump(2) + "\n"); !status.ok()) return fail(status);
    fmt::print("Config written to {} (use it with: moenav bench {} --config {})\n", args.output, args.engine.model, args.output);
  } else {
    fmt::print("{}", result->infeasible.text);
    fmt::print("No config written: relax the binding constraint{} ({}).\n", result->infeasible.binding.size() == 1 ? "" : "s",
               fmt::join(result->infeasible.binding, "; "));
    exit_code = 2;
  }
  if (!args.report.empty()) {
    auto store = tune::ResultsStore::open(args.options.db_path);
    if (!store.ok()) return fail(store.status());
    report::ReportRequest request;
    request.db_path = args.options.db_path;
    request.model_path = args.engine.model;
    request.table = true;  // rows already in the store; nothing is measured here
    auto input = report::load_report_input(**store, request);
    if (!input.ok()) return fail(input.status());
    if (Status status = report::write_file(args.report, report::html_report(*input)); !status.ok()) return fail(status);
    fmt::print("Report: {} (rebuild with: moenav report --db {} -o {})\n", args.report, args.options.db_path, args.report);
  }
  return exit_code;
}

}  // namespace

void register_tune(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<TuneArgs>();
  CLI::App* command = app.add_subcommand("tune", "Find the configuration that best meets an objective under constraints");
  add_engine_options(*command, args->engine);
  tune::TuneOptions& o = args->options;
  command->add_option("--objective", o.objective,
                      "min latency|tpot|ttft|gpu_mem|host_mem|ppl, max throughput|quality; or a sentence such as "
                      "\"minimize latency under 16GB\", \"maximize quality within 2s/token\"")->capture_default_str();
  command->add_option("--constraint", o.constraints,
                      "METRIC OP VALUE: gpu_mem <= 16GiB, tpot <= 50ms, ttft < 1s, latency <= 2s, throughput >= 20, "
                      "ppl <= 1.05*base (repeatable)");
  command->add_option("--budget-minutes", o.budget_minutes, "Stop measuring after this long (0 = no limit)");
  command->add_flag("--exhaustive", o.exhaustive, "Measure every point (validation of the default search)");
  command->add_option("--db", o.db_path, "Results database (reused by later runs)")->capture_default_str();
  command->add_option("-o,--output", args->output, "Where to write the recommended EngineConfig")->capture_default_str();
  command->add_option("--report", args->report, "HTML report to write (empty: none)")->capture_default_str();
  command->add_option("--space", args->space, "Space preset: small, default, wide")->capture_default_str();
  command->add_option("--dim", o.dimensions, "Add or replace a dimension: PATH=V1,V2 (e.g. routing.top_k=1,2,4)");
  command->add_option("--prompt-tokens", o.bench.prompt_tokens, "Workload prompt length")->capture_default_str();
  command->add_option("--gen-tokens", o.bench.gen_tokens, "Workload generated tokens")->capture_default_str();
  command->add_option("--reps", o.bench.repetitions, "Measured repetitions per point")->capture_default_str();
  command->add_option("--warmup", o.bench.warmup, "Warm-up runs per point")->capture_default_str();
  command->add_option("--text", o.text_path, "Workload text (default: WikiText-2 test)");
  command->add_option("--quality-tokens", o.quality_tokens, "Tokens scored per perplexity measurement")->capture_default_str();
  command->add_option("--quality-seq", o.quality_seq, "Perplexity window")->capture_default_str();
  command->add_option("--measure-fraction", o.measure_fraction, "Default mode: most points measured, as a share of the space")
      ->capture_default_str();
  command->add_option("--trace-tokens", o.trace_tokens, "Tokens of routing trace for the cache simulation")->capture_default_str();
  command->add_option("--max-points", o.max_points, "Default mode: most points measured")->capture_default_str();
  command->add_flag("-q,--quiet", args->quiet, "No progress bar");
  command->callback([args, &exit_code] { exit_code = run_tune_command(*args); });
}

}  // namespace moenav::cli
