#include "metrics.h"

#include <algorithm>

#include <fmt/format.h>

#include "layers/moe/router.h"
#include "metrics/memory.h"
#include "model/model.h"
#include "moenav/engine.h"

namespace moenav::server {
namespace {

std::vector<double> latency_bounds() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

void counter(std::string& out, std::string_view name, std::string_view help, uint64_t value) {
  out += fmt::format("# HELP {0} {1}\n# TYPE {0} counter\n{0} {2}\n", name, help, value);
}

void gauge(std::string& out, std::string_view name, std::string_view help, int64_t value) {
  out += fmt::format("# HELP {0} {1}\n# TYPE {0} gauge\n{0} {2}\n", name, help, value);
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, std::string_view name, std::string_view help) const {
  out += fmt::format("# HELP {0} {1}\n# TYPE {0} histogram\n", name, help);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cumulative);
  }
  out += fmt::format("{0}_bucket{{le=\"+Inf\"}} {1}\n{0}_sum {2}\n{0}_count {1}\n", name, count_, sum_);
}

Metrics::Metrics(const Engine& engine)
    : ttft_(latency_bounds()),
      tpot_(latency_bounds()),
      request_seconds_(latency_bounds()),
      step_seconds_(latency_bounds()) {
  const ModelConfig& config = engine.model_config();
  n_experts_ = config.n_experts;
  for (int64_t layer = 0; layer < config.n_layers; ++layer) {
    if (config.is_moe_layer(layer)) resident_experts_ += config.n_experts;
  }
  resident_expert_bytes_ = engine.model().expert_bytes();
  seen_.assign(static_cast<size_t>(std::max<int64_t>(n_experts_, 1)), 0);
}

void Metrics::count_request(std::string_view route, int status) {
  std::lock_guard lock(mutex_);
  ++requests_[{std::string(route), status}];
}

void Metrics::observe_ttft(double seconds) {
  std::lock_guard lock(mutex_);
  ttft_.observe(seconds);
}

void Metrics::observe_sequence(int64_t prompt_tokens, int64_t generated_tokens,
                               std::string_view reason, double seconds, double tpot_seconds) {
  std::lock_guard lock(mutex_);
  prompt_tokens_ += static_cast<uint64_t>(prompt_tokens);
  generated_tokens_ += static_cast<uint64_t>(generated_tokens);
  ++finished_[std::string(reason)];
  request_seconds_.observe(seconds);
  if (tpot_seconds >= 0) tpot_.observe(tpot_seconds);
}

void Metrics::observe_step(int64_t rows, double seconds) {
  std::lock_guard lock(mutex_);
  ++steps_;
  step_rows_ += static_cast<uint64_t>(rows);
  step_seconds_.observe(seconds);
}

void Metrics::set_sequences(int64_t active, int64_t in_flight) {
  std::lock_guard lock(mutex_);
  active_ = active;
  in_flight_ = in_flight;
}

void Metrics::observe_routing(const Routing& routing) {
  // Each distinct expert of a layer's step is one read of its weights, however many rows use it.
  std::fill(seen_.begin(), seen_.end(), 0);
  uint64_t reads = 0;
  uint64_t slots = 0;
  for (int32_t expert : routing.experts) {
    if (expert < 0 || expert >= n_experts_) continue;
    ++slots;
    if (!seen_[static_cast<size_t>(expert)]) {
      seen_[static_cast<size_t>(expert)] = 1;
      ++reads;
    }
  }
  expert_reads_ += reads;
  routed_slots_ += slots;
}

std::string Metrics::render() const {
  std::string out;
  std::lock_guard lock(mutex_);
  out += "# HELP moenav_requests_total HTTP requests by route and status\n"
         "# TYPE moenav_requests_total counter\n";
  for (const auto& [key, count] : requests_) {
    out += fmt::format("moenav_requests_total{{route=\"{}\",status=\"{}\"}} {}\n", key.first,
                       key.second, count);
  }
  out += "# HELP moenav_sequences_finished_total Sequences by finish reason\n"
         "# TYPE moenav_sequences_finished_total counter\n";
  for (const auto& [reason, count] : finished_) {
    out += fmt::format("moenav_sequences_finished_total{{reason=\"{}\"}} {}\n", reason, count);
  }
  counter(out, "moenav_prompt_tokens_total", "Prompt tokens processed", prompt_tokens_);
  counter(out, "moenav_generation_tokens_total", "Tokens generated", generated_tokens_);
  gauge(out, "moenav_sequences_active", "Sequences in the running batch", active_);
  gauge(out, "moenav_sequences_in_flight", "Sequences running or waiting for a slot", in_flight_);
  ttft_.render(out, "moenav_time_to_first_token_seconds", "Arrival to first generated token");
  tpot_.render(out, "moenav_time_per_output_token_seconds", "Mean time per token after the first");
  request_seconds_.render(out, "moenav_sequence_duration_seconds", "Arrival to last token");
  counter(out, "moenav_engine_steps_total", "Batched forward passes", steps_);
  counter(out, "moenav_engine_step_rows_total", "Token rows over all forward passes", step_rows_);
  step_seconds_.render(out, "moenav_engine_step_seconds", "Duration of one batched forward pass");
  const uint64_t reads = expert_reads_.load();
  counter(out, "moenav_expert_reads_total", "Expert weight reads (distinct experts per layer per step)", reads);
  counter(out, "moenav_expert_routed_total", "Token-to-expert assignments", routed_slots_.load());
  counter(out, "moenav_expert_cache_hits_total", "Expert reads served from memory (all resident)", reads);
  counter(out, "moenav_expert_cache_misses_total", "Expert reads that fetched weights (none: all resident)", 0);
  counter(out, "moenav_expert_bytes_moved_total", "Expert weight bytes fetched between tiers", 0);
  gauge(out, "moenav_experts_resident", "Experts resident in memory", resident_experts_);
  gauge(out, "moenav_expert_resident_bytes", "Bytes of resident expert weights", resident_expert_bytes_);
  gauge(out, "moenav_host_memory_rss_bytes", "Resident set size of this process", current_rss_bytes());
  gauge(out, "moenav_host_memory_peak_rss_bytes", "Peak resident set size", peak_rss_bytes());
  gauge(out, "moenav_gpu_memory_used_bytes", "GPU memory in use (0: CPU backend)", 0);
  return out;
}

}  // namespace moenav::server
