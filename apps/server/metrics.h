// Server metrics in the Prometheus text format (GET /metrics): requests by route and status,
// tokens, time to first token and time per output token, engine steps, expert weight reads, and
// process memory. Updated from handler threads and the engine thread; rendered on demand.
//
// Expert cache: the engine runs on ResidentExpertStore (every expert resident, nothing fetched)
// and exposes no cache counters yet, so hits are the expert reads seen through the routing
// observer and misses and bytes moved are 0 by construction. When the offloading store adds
// counters, read them here instead.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace moenav {
class Engine;
struct Routing;
}

namespace moenav::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  void render(std::string& out, std::string_view name, std::string_view help) const;

 private:
  std::vector<double> bounds_;    // upper bounds, ascending; +Inf is implicit
  std::vector<uint64_t> counts_;  // [bounds + 1], not cumulative
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  explicit Metrics(const Engine& engine);

  void count_request(std::string_view route, int status);
  void observe_ttft(double seconds);
  // One finished sequence; tpot_seconds < 0 when it produced fewer than two tokens.
  void observe_sequence(int64_t prompt_tokens, int64_t generated_tokens, std::string_view reason,
                        double seconds, double tpot_seconds);
  void observe_step(int64_t rows, double seconds);
  void set_sequences(int64_t active, int64_t in_flight);
  // Called by the engine for every MoE layer of every step (engine thread).
  void observe_routing(const Routing& routing);

  std::string render() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // (route, status) -> count
  std::map<std::string, uint64_t> finished_;                  // finish reason -> sequences
  uint64_t prompt_tokens_ = 0;
  uint64_t generated_tokens_ = 0;
  uint64_t steps_ = 0;
  uint64_t step_rows_ = 0;
  int64_t active_ = 0;
  int64_t in_flight_ = 0;
  Histogram ttft_;
  Histogram tpot_;
  Histogram request_seconds_;
  Histogram step_seconds_;

  std::atomic<uint64_t> expert_reads_{0};  // distinct (layer, expert) per step
  std::atomic<uint64_t> routed_slots_{0};  // (token, expert) assignments
  std::vector<char> seen_;                 // scratch for observe_routing, engine thread only
  int64_t n_experts_ = 0;
  int64_t resident_experts_ = 0;
  int64_t resident_expert_bytes_ = 0;
};

}  // namespace moenav::server
