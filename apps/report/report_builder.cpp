#include "report/report_builder.h"

#include <fstream>

#include <fmt/format.h>

#include "tokenizer/tokenizer.h"
#include "tune/fingerprint.h"
#include "tune/profiler.h"

namespace moenav::report {
namespace {

using nlohmann::json;

// The workloads of the run (or the defaults of shared/DESIGN.md §5 without one). Keys come from
// the run's summary as stored; the text is tokenized only when rows are to be measured.
struct Workloads {
  tune::Workload bench;
  tune::QualityWorkload quality;
  std::string bench_key, quality_key;
};

Expected<Workloads> workloads_for(const Engine& engine, const json& summary, bool need_tokens) {
  const bool from_run = summary.is_object() && summary.contains("workload");
  Workloads w;
  if (from_run) {
    const json& b = summary["workload"];
    w.bench.bench.prompt_tokens = b.value("prompt_tokens", int64_t{512});
    w.bench.bench.gen_tokens = b.value("gen_tokens", int64_t{128});
    w.bench.bench.repetitions = b.value("repetitions", 3);
    w.bench.bench.warmup = b.value("warmup", 1);
    w.bench.source_name = b.value("source", "");
    const json& q = summary["quality_workload"];
    w.quality.seq = q.value("seq", int64_t{512});
    w.quality.max_tokens = q.value("max_tokens", int64_t{16384});
    w.quality.source_name = q.value("source", "");
    w.bench_key = b.dump();
    w.quality_key = q.dump();
  }
  if (!need_tokens && from_run) return w;
  MOENAV_ASSIGN_OR_RETURN(tune::TextSource text, tune::load_text_source(from_run ? summary.value("text_path", "") : ""));
  MOENAV_RETURN_IF_ERROR(engine.require_tokenizer());
  const std::vector<int32_t> tokens = engine.tokenizer().encode(text.text, false);
  w.bench.prompt_source = tokens;
  w.quality.tokens = tokens;
  if (!from_run) {
    w.bench.source_name = w.quality.source_name = text.name;
    w.bench_key = w.bench.key();
    w.quality_key = w.quality.key();
  }
  return w;
}

Status fill_table(ReportInput& input, const ReportRequest& request, const std::string& model_path,
                  tune::ResultsStore& store) {
  if (model_path.empty()) return Status::error("Table 2 needs a model: give --model MODEL (no tune run names one)");
  const EngineConfig base;
  MOENAV_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::create(model_path, base));
  input.paper_rows = tune::paper_rows(*engine, base);
  const bool measure = request.measure_table;
  MOENAV_ASSIGN_OR_RETURN(Workloads w, workloads_for(*engine, input.summary, measure));
  tune::PaperTableContext context{tune::model_fingerprint(*engine).key, tune::hardware_fingerprint().key, w.bench_key,
                                  w.quality_key};
  tune::Profiler profiler(model_path);
  tune::fill_paper_rows(input.paper_rows, store, context, measure ? &profiler : nullptr, measure ? &w.bench : nullptr,
                        measure ? &w.quality : nullptr, request.progress);
  return ok_status();
}

}  // namespace

Expected<ReportInput> load_report_input(tune::ResultsStore& store, const ReportRequest& request) {
  ReportInput input;
  input.db_path = request.db_path;
  input.summary = json(nullptr);
  std::string model_path = request.model_path;
  for (const tune::StoredRun& run : store.runs()) {
    input.runs.push_back({{"id", run.id}, {"mode", run.mode}, {"goal", run.goal}, {"model", run.model_path},
                          {"finished", run.finished > 0}});
    const bool wanted = request.run_id ? run.id == *request.run_id : input.summary.is_null();
    if (wanted && run.finished > 0 && run.result.is_object() && run.result.contains("points")) {
      input.summary = run.result;
      input.run_id = run.id;
      if (model_path.empty()) model_path = run.model_path;
    }
  }
  if (request.run_id && input.summary.is_null()) {
    return Status::errorf("{}: no finished tune run with id {}", request.db_path, *request.run_id);
  }
  if (request.table) MOENAV_RETURN_IF_ERROR(fill_table(input, request, model_path, store));
  return input;
}

Status write_file(const std::string& path, const std::string& contents) {
  std::ofstream stream(path, std::ios::binary);
  if (!stream) return Status::errorf("{}: cannot open for writing", path);
  stream << contents;
  stream.close();
  if (!stream) return Status::errorf("{}: write failed", path);
  return ok_status();
}

}  // namespace moenav::report
