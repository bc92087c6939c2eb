// The navigator's memory (shared/DESIGN.md §6, "Remember"): an SQLite database of every measured
// point keyed by model hash, hardware fingerprint, workload and config, so a second `tune` on the
// same machine reuses what the first one measured. Every point is committed the moment it is
// measured (WAL journal), so killing tune loses at most the point in flight; the next run resumes.
// Perplexities live in their own table keyed by the (weights, routing) quality key, which does not
// depend on the hardware.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moenav/status.h"
#include "tune/metrics.h"

struct sqlite3;

namespace moenav::tune {

struct StoredPoint {
  std::string model_hash, hardware, workload;
  std::string config_key;          // Point::key
  nlohmann::json config;           // full EngineConfig JSON (loadable by --config)
  std::string label;
  std::string status;              // "ok", "error", "unavailable"
  std::string error;
  Measurement measurement;
  nlohmann::json predicted;        // cost-model figures at the time it was measured
  double created = 0.0;            // unix seconds
};

struct StoredQuality {
  std::string model_hash, workload, quality_key;
  nlohmann::json config;
  std::string status, error;
  double ppl = NAN;
  int64_t scored_tokens = 0;
  double seconds = 0.0;
  double experts_per_token = NAN;
};

struct StoredRun {
  int64_t id = 0;
  std::string model_hash, model_path, hardware, workload, goal, mode;
  nlohmann::json result;  // navigator summary: predictions, Pareto front, curves, notes
  double started = 0.0, finished = 0.0;
};

class ResultsStore {
 public:
  static Expected<std::unique_ptr<ResultsStore>> open(const std::string& path);
  ~ResultsStore();
  const std::string& path() const { return path_; }

  Status put_point(const StoredPoint& point);
  std::optional<StoredPoint> find_point(const std::string& model_hash, const std::string& hardware,
                                        const std::string& workload, const std::string& config_key);
  // Every point for the model (and hardware/workload when non-empty).
  std::vector<StoredPoint> points(const std::string& model_hash, const std::string& hardware = "",
                                  const std::string& workload = "");

  Status put_quality(const StoredQuality& quality);
  std::optional<StoredQuality> find_quality(const std::string& model_hash, const std::string& workload,
                                            const std::string& quality_key);
  std::vector<StoredQuality> qualities(const std::string& model_hash);

  Expected<int64_t> begin_run(const StoredRun& run);
  Status finish_run(int64_t id, const nlohmann::json& result);
  std::vector<StoredRun> runs();  // newest first

  Status put_description(const std::string& kind, const std::string& key, const nlohmann::json& description);
  std::optional<nlohmann::json> description(const std::string& kind, const std::string& key);

 private:
  ResultsStore() = default;
  Status execute(const std::string& sql);
  sqlite3* db_ = nullptr;
  std::string path_;
};

double unix_seconds();

}  // namespace moenav::tune
