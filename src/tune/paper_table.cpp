#include "tune/paper_table.h"

#include <fmt/format.h>

#include "model/model.h"
#include "tune/config_space.h"
#include "tune/default_space.h"

namespace moenav::tune {

std::vector<PaperRow> paper_rows(const Engine& base_engine, const EngineConfig& base) {
  const ModelConfig& model = base_engine.model_config();
  const int64_t experts = model.n_experts;
  std::vector<PaperRow> rows;
  auto add = [&](std::string method, auto&& edit) {
    PaperRow row;
    row.method = std::move(method);
    row.config = base;
    edit(row.config);
    rows.push_back(std::move(row));
  };
  add("Baseline", [](EngineConfig&) {});
  add("Quantization INT8 (q8_0)", [](EngineConfig& c) { c.weights.type = "q8_0"; });
  add("Quantization INT4 (q4_0)", [](EngineConfig& c) { c.weights.type = "q4_0"; });
  add("Quantization INT4 (q4_k)", [](EngineConfig& c) { c.weights.type = "q4_k"; });
  if (experts > 1) {
    // Mixtral-Offloading's "expert = n": n experts per layer kept in the fast tier, LRU.
    for (int quarter : {1, 2, 3}) {
      const int64_t slots = std::max<int64_t>(1, experts * quarter / 4);
      add(fmt::format("Offloading (cache {}/{} experts, LRU)", slots, experts), [&](EngineConfig& c) {
        c.placement.expert_cache.size = std::to_string(slots);
        c.placement.expert_cache.policy = "lru";
      });
    }
    add(fmt::format("Offloading + CPU compute of misses (cache {}/{}, Fiddler)", std::max<int64_t>(1, experts / 4), experts),
        [&](EngineConfig& c) {
          c.placement.expert_cache.size = std::to_string(std::max<int64_t>(1, experts / 4));
          c.miss.policy = "cpu";
        });
    // MoE-Infinity's memory fractions: the budget is a fraction of all weights.
    const double total = static_cast<double>(base_engine.model().total_bytes());
    for (double fraction : {0.95, 0.75, 0.5, 0.25}) {
      add(fmt::format("Memory fraction {:.2f} (cache auto, MoE-Infinity)", fraction), [&](EngineConfig& c) {
        c.placement.expert_cache.size = "auto";
        c.device.host_memory = fmt::format("{}", static_cast<int64_t>(fraction * total));
      });
    }
    add("Expert skipping (weight < 0.2, AdapMoE)", [](EngineConfig& c) {
      c.routing.skip_policy = "threshold";
      c.routing.skip_threshold = 0.2;
    });
    add(fmt::format("Fewer experts (top-{} of {})", std::max<int64_t>(1, model.n_experts_used / 2), experts),
        [&](EngineConfig& c) { c.routing.top_k = static_cast<int>(std::max<int64_t>(1, model.n_experts_used / 2)); });
  }
  // Without expert caching in the build these rows would measure the baseline under another name.
  if (Status cache = probe_expert_cache(base_engine.model().path, base);
      !cache.ok()) {
    for (PaperRow& row : rows) {
      if (row.config.placement.expert_cache.size != base.placement.expert_cache.size) {
        row.status = "unavailable";
        row.error = cache.message();
      }
    }
  }
  return rows;
}

void fill_paper_rows(std::vector<PaperRow>& rows, ResultsStore& store, const PaperTableContext& context,
                     Profiler* profiler, const Workload* workload, const QualityWorkload* quality, bool progress) {
  for (size_t i = 0; i < rows.size(); ++i) {
    PaperRow& row = rows[i];
    if (row.status == "unavailable") continue;
    const Point point = make_point(row.config, row.method);
    auto found = store.find_point(context.model_hash, context.hardware, context.workload_key, point.key);
    if ((!found || found->status != "ok") && profiler != nullptr && workload != nullptr) {
      if (progress) fmt::print(stderr, "table [{}/{}] measuring {}\n", i + 1, rows.size(), row.method);
      const ProfileOutcome outcome = profiler->measure(row.config, *workload);
      StoredPoint stored{context.model_hash, context.hardware, context.workload_key, point.key,
                         config_to_json(row.config), row.method, outcome.status, outcome.error,
                         outcome.measurement, nlohmann::json::object(), unix_seconds()};
      (void)store.put_point(stored);
      found = stored;
    }
    if (found) {
      row.status = found->status;
      row.error = found->error;
      row.measurement = found->measurement;
    }
    if (row.status != "ok") continue;
    auto q = store.find_quality(context.model_hash, context.quality_workload_key, point.quality_key);
    if ((!q || q->status != "ok") && profiler != nullptr && quality != nullptr) {
      const ProfileOutcome outcome = profiler->measure_quality(row.config, *quality);
      StoredQuality stored{context.model_hash, context.quality_workload_key, point.quality_key,
                           config_to_json(row.config), outcome.status, outcome.error, outcome.measurement.ppl,
                           outcome.measurement.gen_tokens, outcome.measurement.seconds,
                           outcome.measurement.experts_per_token};
      (void)store.put_quality(stored);
      q = stored;
    }
    if (q && q->status == "ok") row.measurement.ppl = q->ppl;
  }
}

}  // namespace moenav::tune
