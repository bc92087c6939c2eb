// The paper's Table 2 (shared/seeds/000: TTFT, TPOT, perplexity and GPU memory of Mixtral
// variants: baseline, INT8, offloading at several expert counts, Fiddler's CPU compute of
// misses, MoE-Infinity's memory fractions) remade for the model at hand, each method expressed
// as an EngineConfig. Rows come from the results store; `measure_paper_rows` fills the missing
// ones through the profiler (and stores them), so `moenav report --table` needs no earlier tune.
#pragma once

#include <string>
#include <vector>

#include "moenav/engine.h"
#include "tune/metrics.h"
#include "tune/profiler.h"
#include "tune/results_store.h"

namespace moenav::tune {

struct PaperRow {
  std::string method;  // "Quantization INT8", "Offloading (cache 2/8 experts)"
  EngineConfig config;
  std::string status = "not measured";  // "ok", "unavailable", "error", "not measured"
  std::string error;
  Measurement measurement;  // ppl filled from the quality table
};

// `base_engine` is the model loaded with `base` (its sizes give the memory-fraction budgets).
std::vector<PaperRow> paper_rows(const Engine& base_engine, const EngineConfig& base);

struct PaperTableContext {
  std::string model_hash, hardware;
  std::string workload_key, quality_workload_key;
};

// Fills rows from the store; with a profiler, measures the missing ones first (progress lines on
// stderr when `progress`).
void fill_paper_rows(std::vector<PaperRow>& rows, ResultsStore& store, const PaperTableContext& context,
                     Profiler* profiler, const Workload* workload, const QualityWorkload* quality, bool progress);

}  // namespace moenav::tune
