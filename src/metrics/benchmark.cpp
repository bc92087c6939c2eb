#include "metrics/benchmark.h"

#include <algorithm>

#include "backend/nvml.h"
#include "metrics/memory.h"
#include "model/model.h"
#include "runtime/generate.h"

namespace moenav {

Summary summarize(std::vector<double> values) {
  Summary summary;
  if (values.empty()) return summary;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  summary.median = n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
  summary.min = values.front();
  summary.max = values.back();
  return summary;
}

int64_t decode_weight_bytes(const Engine& engine) {
  const Model& model = engine.model();
  const ModelConfig& c = model.config;
  int64_t bytes = model.weights.output.bytes() + model.weights.token_embedding.row_bytes();
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& layer = model.weights.layers[static_cast<size_t>(l)];
    bytes += layer.attn_q.bytes() + layer.attn_k.bytes() + layer.attn_v.bytes() + layer.attn_output.bytes();
    if (c.is_moe_layer(l)) {
      const int64_t k = engine.config().routing.top_k > 0 ? engine.config().routing.top_k : c.n_experts_used;
      bytes += layer.router.bytes() + k * layer.experts[0].bytes();
    } else {
      bytes += layer.dense.bytes();
    }
  }
  return bytes;
}

nlohmann::json BenchResult::to_json() const {
  std::vector<double> ttft, tpot, prefill, decode;
  for (const BenchSample& s : samples) {
    ttft.push_back(s.ttft_seconds * 1e3);
    tpot.push_back(s.tpot_seconds * 1e3);
    prefill.push_back(s.prefill_tokens_per_second);
    decode.push_back(s.decode_tokens_per_second);
  }
  auto entry = [](const std::vector<double>& values) {
    const Summary s = summarize(values);
    return nlohmann::json{{"median", s.median}, {"min", s.min}, {"max", s.max}, {"samples", values}};
  };
  return {{"ttft_ms", entry(ttft)},
          {"tpot_ms", entry(tpot)},
          {"prefill_tokens_per_second", entry(prefill)},
          {"decode_tokens_per_second", entry(decode)},
          {"peak_rss_bytes", peak_rss_bytes},
          {"gpu_peak_bytes", gpu_peak_bytes},
          {"gpu_process_bytes_nvml", gpu_process_bytes},
          {"gpu_graph_launches", gpu_graph_launches},
          {"decode_weight_bytes_per_token", decode_bytes_per_token},
          {"stage_seconds", [&] {
             nlohmann::json out = nlohmann::json::object();
             for (size_t i = 0; i < kStageNames.size(); ++i) out[std::string(kStageNames[i])] = stages.seconds[i];
             return out;
           }()}};
}

Expected<BenchResult> run_benchmark(Engine& engine, std::span<const int32_t> prompt_source,
                                    const BenchOptions& options) {
  if (prompt_source.empty()) return Status::error("bench: no prompt tokens");
  if (options.prompt_tokens + options.gen_tokens > engine.context_length()) {
    return Status::errorf("bench: {} prompt + {} generated tokens exceed the context length {}",
                          options.prompt_tokens, options.gen_tokens, engine.context_length());
  }
  std::vector<int32_t> prompt;
  for (int64_t i = 0; i < options.prompt_tokens; ++i) {
    prompt.push_back(prompt_source[static_cast<size_t>(i) % prompt_source.size()]);
  }
  GenerationOptions generation;
  generation.max_tokens = options.gen_tokens;
  generation.stop_at_eos = false;  // always the same number of tokens
  BenchResult result;
  engine.reset_stage_times();
  for (int run = 0; run < options.warmup + options.repetitions; ++run) {
    auto session = engine.new_session();
    MOENAV_ASSIGN_OR_RETURN(GenerationResult generated, generate(engine, *session, prompt, generation));
    if (run < options.warmup) {
      engine.reset_stage_times();
      continue;
    }
    BenchSample sample;
    sample.ttft_seconds = generated.ttft_seconds;
    sample.tpot_seconds = generated.tpot_seconds();
    sample.prefill_tokens_per_second = static_cast<double>(prompt.size()) / generated.ttft_seconds;
    sample.decode_tokens_per_second = sample.tpot_seconds > 0 ? 1.0 / sample.tpot_seconds : 0.0;
    result.samples.push_back(sample);
  }
  result.stages = engine.stage_times();
  result.peak_rss_bytes = moenav::peak_rss_bytes();
  result.gpu_peak_bytes = engine.gpu_peak_bytes();
  result.gpu_graph_launches = engine.gpu_graph_launches();
  if (result.gpu_peak_bytes >= 0) {
    auto process = cuda::nvml_process_bytes();
    result.gpu_process_bytes = process.ok() ? *process : -1;
  }
  result.decode_bytes_per_token = decode_weight_bytes(engine);
  return result;
}

}  // namespace moenav
