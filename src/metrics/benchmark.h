// The measurement protocol of shared/DESIGN.md §5: a prompt of P tokens, G greedy tokens, one
// warm-up and R repetitions; TTFT, TPOT, prefill and decode rates, their medians and spread, and
// the decode bound from the bytes each token must read.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/stage_timer.h"
#include "moenav/engine.h"

namespace moenav {

struct BenchOptions {
  int64_t prompt_tokens = 512;
  int64_t gen_tokens = 128;
  int repetitions = 3;
  int warmup = 1;
};

struct BenchSample {
  double ttft_seconds = 0.0;
  double tpot_seconds = 0.0;
  double prefill_tokens_per_second = 0.0;
  double decode_tokens_per_second = 0.0;
};

struct Summary {
  double median = 0.0, min = 0.0, max = 0.0;
};
Summary summarize(std::vector<double> values);

struct BenchResult {
  std::vector<BenchSample> samples;
  int64_t peak_rss_bytes = 0;
  int64_t gpu_peak_bytes = -1;         // the device allocator's high-water mark; -1 on the CPU
  int64_t gpu_process_bytes = -1;      // NVML's figure for this process at the end; -1 if none
  int64_t gpu_graph_launches = -1;     // decode steps launched as a CUDA graph; -1 on the CPU
  int64_t decode_bytes_per_token = 0;  // weights a decode step reads (top-k experts)
  StageTimes stages;                   // summed over the measured repetitions
  nlohmann::json to_json() const;
};

// prompt_source: tokens to take the prompt from (cycled if shorter than prompt_tokens).
Expected<BenchResult> run_benchmark(Engine& engine, std::span<const int32_t> prompt_source,
                                    const BenchOptions& options);

// Bytes of weights one decode step reads: non-expert weights, the LM head, k experts per layer.
int64_t decode_weight_bytes(const Engine& engine);

}  // namespace moenav
