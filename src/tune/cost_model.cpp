#include "tune/cost_model.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <random>

#include <fmt/format.h>

#include "core/byte_size.h"
#include "backend/cpu/matmul.h"
#include "core/thread_pool.h"
#include "model/model.h"

namespace moenav::tune {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kTtft = 0, kTpot = 1, kMemory = 2;

// Seconds per call of `work`, the best of `repetitions` timings of enough calls to last ~2 ms.
template <typename Work>
double time_call(Work&& work, int repetitions) {
  work();  // warm caches and the pool
  auto start = Clock::now();
  work();
  const double once = std::max(1e-7, std::chrono::duration<double>(Clock::now() - start).count());
  const int calls = static_cast<int>(std::clamp(2e-3 / once, 1.0, 2000.0));
  double best = once;
  for (int r = 0; r < repetitions; ++r) {
    start = Clock::now();
    for (int i = 0; i < calls; ++i) work();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - start).count() / calls);
  }
  return best;
}

// Slots per MoE layer an expert_cache.size asks for ("all", "auto", "4", "2GiB").
int64_t cache_slots(const EngineConfig& config, int64_t n_experts, int64_t n_moe_layers, int64_t expert_bytes,
                    int64_t non_expert_bytes) {
  const std::string& size = config.placement.expert_cache.size;
  auto from_bytes = [&](int64_t bytes) {
    return std::clamp<int64_t>(bytes / std::max<int64_t>(1, expert_bytes * n_moe_layers), 0, n_experts);
  };
  if (size.empty() || size == "all") return n_experts;
  if (size == "auto") {
    const std::string& budget = config.device.backend == "cuda" ? config.device.gpu_memory : config.device.host_memory;
    auto bytes = parse_byte_size(budget);
    return budget.empty() || !bytes.ok() ? n_experts : from_bytes(*bytes - non_expert_bytes);
  }
  if (std::all_of(size.begin(), size.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
    return std::clamp<int64_t>(std::stoll(size.substr(0, 12)), 0, n_experts);  // no overflow
  }
  auto bytes = parse_byte_size(size);
  return bytes.ok() ? from_bytes(*bytes) : n_experts;
}

SelectionRule selection_rule(const EngineConfig& config, int64_t default_k, bool renormalize) {
  SelectionRule rule;
  rule.top_k = config.routing.top_k > 0 ? config.routing.top_k : default_k;
  if (!config.routing.per_layer_top_k.empty()) {
    double sum = 0.0;
    for (int k : config.routing.per_layer_top_k) sum += k;
    rule.top_k = static_cast<int64_t>(std::lround(sum / static_cast<double>(config.routing.per_layer_top_k.size())));
  }
  if (config.routing.skip_policy == "threshold") rule.skip_threshold = config.routing.skip_threshold;
  rule.renormalize = renormalize;
  return rule;
}

double time_views(const std::vector<TensorView>& views, const std::vector<float>& input, std::vector<float>& output,
                  int64_t rows, ThreadPool& pool, int repetitions) {
  double total = 0.0;
  for (const TensorView& view : views) {
    if (view.empty() || view.shape.rank != 2) continue;
    total += time_call([&] { cpu::matmul(view, input.data(), rows, output.data(), pool); }, repetitions);
  }
  return total;
}

}  // namespace

double KernelTimes::at(const std::vector<double>& rows, const std::vector<double>& series, double n) {
  if (series.empty()) return 0.0;
  if (series.size() == 1 || n <= rows.front()) return series.front() * std::max(n, 0.0) / rows.front();
  size_t i = 1;
  while (i + 1 < rows.size() && rows[i] < n) ++i;
  const double x0 = std::log(rows[i - 1]), x1 = std::log(rows[i]);
  const double y0 = std::log(std::max(series[i - 1], 1e-12)), y1 = std::log(std::max(series[i], 1e-12));
  return std::exp(y0 + (y1 - y0) * (std::log(n) - x0) / (x1 - x0));
}

json KernelTimes::to_json() const {
  return {{"rows", rows}, {"expert_s", expert}, {"dense_s", dense}, {"head_s", head},
          {"expert_bytes", expert_bytes}, {"weight_bytes", weight_bytes}};
}

KernelTimes KernelTimes::from_json(const json& stored) {
  KernelTimes times;
  times.rows = stored.at("rows").get<std::vector<double>>();
  times.expert = stored.at("expert_s").get<std::vector<double>>();
  times.dense = stored.at("dense_s").get<std::vector<double>>();
  times.head = stored.at("head_s").get<double>();
  times.expert_bytes = stored.at("expert_bytes").get<int64_t>();
  times.weight_bytes = stored.at("weight_bytes").get<int64_t>();
  return times;
}

json StageSplit::to_json() const {
  return {{"dense", dense}, {"experts", experts}, {"head", head}, {"misses", misses}, {"other", other}};
}

double Prediction::value(Metric metric, int64_t gen_tokens) const {
  switch (metric) {
    case Metric::Ttft: return ttft_s;
    case Metric::Tpot: return tpot_s;
    case Metric::Latency: return ttft_s + static_cast<double>(gen_tokens) * tpot_s;
    case Metric::Throughput: return static_cast<double>(gen_tokens) / (ttft_s + static_cast<double>(gen_tokens) * tpot_s);
    case Metric::GpuMemory:
    case Metric::HostMemory: return memory_bytes;
    case Metric::Perplexity: return ppl;
    case Metric::Count: break;
  }
  return NAN;
}

json Prediction::to_json(int64_t gen_tokens) const {
  auto number = [](double v) { return std::isnan(v) ? json(nullptr) : json(v); };
  return {{"ttft_s", number(ttft_s)}, {"tpot_s", number(tpot_s)},
          {"latency_s", number(value(Metric::Latency, gen_tokens))},
          {"memory_bytes", number(memory_bytes)}, {"ppl", number(ppl)},
          {"experts_per_token", number(experts_per_token)}, {"hit_rate", number(hit_rate)},
          {"stages", stages.to_json()}};
}

std::string CostModel::speed_key(const EngineConfig& config) {
  json key = json::object();
  const json delta = config_delta(config);
  for (const auto& [path, value] : delta.items()) {
    if (path.rfind("weights.", 0) == 0 || path == "device.threads" || path == "device.backend") key[path] = value;
  }
  return key.dump();
}

KernelTimes CostModel::benchmark_kernels(Engine& engine, int repetitions) {
  const Model& model = engine.model();
  const ModelConfig& c = model.config;
  KernelTimes times;
  times.rows = {1, 4, 16, 64, 256};
  times.weight_bytes = model.total_bytes();
  const LayerWeights* moe_layer = nullptr;
  for (int64_t l = 0; l < c.n_layers && moe_layer == nullptr; ++l) {
    if (c.is_moe_layer(l)) moe_layer = &model.weights.layers[static_cast<size_t>(l)];
  }
  const LayerWeights& layer = moe_layer ? *moe_layer : model.weights.layers[0];
  const int64_t widest = std::max({c.hidden, c.q_dim(), c.expert_ffn, c.dense_ffn, c.vocab, c.n_experts}) ;
  std::vector<float> input(static_cast<size_t>(times.rows.back() * widest));
  std::mt19937 random(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& value : input) value = normal(random);
  std::vector<float> output(static_cast<size_t>(times.rows.back() * widest));
  const std::vector<TensorView> dense_views = {layer.attn_q, layer.attn_k, layer.attn_v, layer.attn_output,
                                               layer.mla.q_a, layer.mla.q_b, layer.mla.q, layer.mla.kv_a,
                                               layer.router, layer.shared_expert.gate, layer.shared_expert.up,
                                               layer.shared_expert.down, layer.dense.gate, layer.dense.up,
                                               layer.dense.down};
  std::vector<TensorView> expert_views;
  if (!layer.experts.empty()) {
    const FfnWeights& expert = layer.experts[0];
    expert_views = {expert.gate, expert.up, expert.down};
    times.expert_bytes = expert.bytes();
  }
  ThreadPool& pool = engine.pool();
  for (double rows : times.rows) {
    const int64_t n = static_cast<int64_t>(rows);
    times.dense.push_back(time_views(dense_views, input, output, n, pool, repetitions));
    times.expert.push_back(time_views(expert_views, input, output, n, pool, repetitions));
  }
  times.head = time_views({model.weights.output}, input, output, 1, pool, repetitions);
  return times;
}

void CostModel::set_model(const ModelConfig& model) {
  n_layers_ = model.n_layers;
  n_moe_layers_ = 0;
  for (int64_t l = 0; l < model.n_layers; ++l) n_moe_layers_ += model.is_moe_layer(l) ? 1 : 0;
  n_experts_ = model.n_experts;
  default_k_ = model.n_experts_used;
  context_ = model.context_length;
  renormalize_ = model.norm_topk_prob;
  kv_cache_width_ = model.kv_cache_width();
}

void CostModel::set_quality(const std::string& quality_key, double ppl, double experts_per_token) {
  quality_[quality_key] = {ppl, experts_per_token};
}

const KernelTimes* CostModel::kernels_for(const EngineConfig& config) const {
  if (auto it = kernels_.find(speed_key(config)); it != kernels_.end()) return &it->second;
  // Same threads, other weights: the closest stand-in until that class is benchmarked.
  json wanted = json::parse(speed_key(config));
  for (const auto& [key, times] : kernels_) {
    json have = json::parse(key);
    if (have.value("device.threads", json(0)) == wanted.value("device.threads", json(0))) return &times;
  }
  return kernels_.empty() ? nullptr : &kernels_.begin()->second;
}

Prediction CostModel::raw_predict(const Point& point, const BenchOptions& workload) const {
  Prediction prediction;
  const KernelTimes* kernels = kernels_for(point.config);
  if (kernels == nullptr) return prediction;
  const EngineConfig& config = point.config;
  const SelectionRule rule = selection_rule(config, default_k_, renormalize_);
  double ept = memo_experts_per_token(rule);
  if (auto it = quality_.find(point.quality_key); it != quality_.end()) {
    prediction.ppl = it->second.first;
    if (!std::isnan(it->second.second)) ept = it->second.second;
  }
  prediction.experts_per_token = ept;
  const int64_t expert_total_bytes = kernels->expert_bytes * n_experts_ * n_moe_layers_;
  const int64_t slots = cache_slots(config, n_experts_, n_moe_layers_, kernels->expert_bytes,
                                    kernels->weight_bytes - expert_total_bytes);
  const std::string& policy = config.placement.expert_cache.policy;
  prediction.hit_rate = slots >= n_experts_ ? 1.0 : memo_hit_rate(rule, slots, policy);
  const double fetch_s = static_cast<double>(kernels->expert_bytes) / copy_bandwidth_;
  const auto& rows = kernels->rows;
  // One decode step.
  StageSplit& stages = prediction.stages;
  stages.dense = static_cast<double>(n_layers_) * KernelTimes::at(rows, kernels->dense, 1);
  stages.experts = static_cast<double>(n_moe_layers_) * ept * KernelTimes::at(rows, kernels->expert, 1);
  stages.head = kernels->head;
  stages.misses = static_cast<double>(n_moe_layers_) * ept * (1.0 - prediction.hit_rate) * fetch_s;
  const double scale = anchor_dense_ > 0 ? stages.dense / anchor_dense_ : 1.0;  // thread count, weight type
  stages.other = other_decode_s_ * scale;
  prediction.tpot_s = stages.dense + stages.experts + stages.head + stages.misses + stages.other;
  // Prefill in ubatch chunks; rows of a chunk spread over the experts they activate.
  const int64_t prompt = std::max<int64_t>(workload.prompt_tokens, 1);
  const int64_t chunk = std::clamp<int64_t>(config.batch.ubatch, 1, prompt);
  double prefill = 0.0;
  for (int64_t begin = 0; begin < prompt; begin += chunk) {
    const double r = static_cast<double>(std::min(chunk, prompt - begin));
    const double active = static_cast<double>(n_experts_) * (1.0 - std::pow(1.0 - ept / static_cast<double>(n_experts_), r));
    const double per_expert_rows = active > 0 ? r * ept / active : 0.0;
    prefill += static_cast<double>(n_layers_) * KernelTimes::at(rows, kernels->dense, r);
    prefill += static_cast<double>(n_moe_layers_) * active * KernelTimes::at(rows, kernels->expert, per_expert_rows);
    prefill += static_cast<double>(n_moe_layers_) * active * (1.0 - static_cast<double>(slots) / static_cast<double>(n_experts_)) * fetch_s;
  }
  prediction.ttft_s = prefill + kernels->head + other_prefill_per_row_s_ * static_cast<double>(prompt) * scale;
  // Memory: resident weights, the KV cache the workload fills, the process itself.
  const double resident_weights = static_cast<double>(kernels->weight_bytes) -
                                  static_cast<double>(kernels->expert_bytes * n_moe_layers_ * (n_experts_ - slots));
  const double kv = static_cast<double>((workload.prompt_tokens + workload.gen_tokens) * n_layers_ *
                                        kv_cache_width_ * config.kv_cache.element_bytes());
  prediction.memory_bytes = memory_offset_ + resident_weights + kv;
  return prediction;
}

double CostModel::memo_experts_per_token(const SelectionRule& rule) const {
  if (trace_.n_tokens() == 0) return static_cast<double>(rule.top_k);
  const std::string key = fmt::format("e|{}|{}", rule.top_k, rule.skip_threshold);
  auto it = memo_.find(key);
  if (it == memo_.end()) it = memo_.emplace(key, experts_per_token(trace_, rule)).first;
  return it->second;
}

double CostModel::memo_hit_rate(const SelectionRule& rule, int64_t slots, const std::string& policy) const {
  if (trace_.n_tokens() == 0) return static_cast<double>(slots) / static_cast<double>(std::max<int64_t>(n_experts_, 1));
  const std::string key = fmt::format("h|{}|{}|{}|{}", rule.top_k, rule.skip_threshold, slots, policy);
  auto it = memo_.find(key);
  if (it == memo_.end()) it = memo_.emplace(key, simulate_hit_rate(trace_, rule, slots, policy)).first;
  return it->second;
}

std::vector<int> CostModel::choices_of(const Point& point) const {
  if (auto it = choices_memo_.find(point.key); it != choices_memo_.end()) return it->second;
  json flat = json::object();
  for (const ConfigOption& row : config_options()) flat[std::string(row.path)] = row.get(point.config);
  std::vector<int> choices(space_choices_.size(), -1);
  for (size_t d = 0; d < space_choices_.size(); ++d) {
    for (size_t c = 0; c < space_choices_[d].size() && choices[d] < 0; ++c) {
      const json settings = json::parse(space_choices_[d][c]);
      bool all = true;
      for (const auto& [path, value] : settings.items()) all = all && flat.contains(path) && flat[path] == value;
      if (all) choices[d] = static_cast<int>(c);
    }
  }
  choices_memo_[point.key] = choices;
  return choices;
}

void CostModel::set_space(const ConfigSpace& space) {
  space_choices_.clear();
  choices_memo_.clear();
  for (const Dimension& dimension : space.dimensions) {
    std::vector<std::string> keys;
    for (const Choice& choice : dimension.choices) {
      json settings = json::object();
      for (const Setting& setting : choice.settings) settings[setting.path] = setting.value;
      keys.push_back(settings.dump());
    }
    space_choices_.push_back(std::move(keys));
  }
  for (auto& factors : factors_) {
    factors.assign(space_choices_.size(), {});
    for (size_t d = 0; d < space_choices_.size(); ++d) factors[d].assign(space_choices_[d].size(), 0.0);
  }
}

double CostModel::correction(const std::vector<int>& choices, int metric) const {
  double log_factor = global_[metric];
  for (size_t d = 0; d < choices.size() && d < factors_[metric].size(); ++d) {
    if (choices[d] >= 0) log_factor += factors_[metric][d][static_cast<size_t>(choices[d])];
  }
  return std::exp(log_factor);
}

Prediction CostModel::predict(const Point& point, const BenchOptions& workload) const {
  Prediction prediction = raw_predict(point, workload);
  const std::vector<int> choices = choices_of(point);
  prediction.ttft_s *= correction(choices, kTtft);
  const double tpot_factor = correction(choices, kTpot);
  prediction.tpot_s *= tpot_factor;
  StageSplit& s = prediction.stages;
  for (double* stage : {&s.dense, &s.experts, &s.head, &s.misses, &s.other}) *stage *= tpot_factor;
  prediction.memory_bytes *= correction(choices, kMemory);
  return prediction;
}

void CostModel::set_anchor(const Point& base, const Measurement& measured, const BenchOptions& workload) {
  other_decode_s_ = other_prefill_per_row_s_ = memory_offset_ = 0.0;
  anchor_dense_ = 0.0;
  const Prediction raw = raw_predict(base, workload);
  anchor_dense_ = raw.stages.dense;
  other_decode_s_ = std::max(0.0, measured.tpot_s - raw.tpot_s);
  other_prefill_per_row_s_ = std::max(0.0, measured.ttft_s - raw.ttft_s) / static_cast<double>(std::max<int64_t>(workload.prompt_tokens, 1));
  const double memory = measured.value(memory_metric_);
  memory_offset_ = std::isnan(memory) ? 0.0 : memory - raw.memory_bytes;
}

void CostModel::add_observation(const Point& point, const Measurement& measured, const BenchOptions& workload) {
  const Prediction raw = raw_predict(point, workload);
  Observation observation;
  observation.choices = choices_of(point);
  const double measured_values[3] = {measured.ttft_s, measured.tpot_s, measured.value(memory_metric_)};
  const double predicted_values[3] = {raw.ttft_s, raw.tpot_s, raw.memory_bytes};
  for (int m = 0; m < 3; ++m) {
    const bool usable = measured_values[m] > 0 && predicted_values[m] > 0;
    observation.log_residual[m] = usable ? std::log(measured_values[m] / predicted_values[m]) : NAN;
  }
  observations_.push_back(std::move(observation));
  refit();
}

// Ridge backfitting of log(measured / predicted) = global + Σ_dimension factor[choice]: each
// factor is shrunk toward 0 (no correction) by a prior worth one observation.
void CostModel::refit() {
  constexpr double kPrior = 1.0;
  for (int m = 0; m < 3; ++m) {
    auto& factors = factors_[m];
    for (int iteration = 0; iteration < 20; ++iteration) {
      auto residual = [&](const Observation& o, int skip_dimension) {
        double r = o.log_residual[m] - (skip_dimension == -2 ? 0.0 : global_[m]);
        for (size_t d = 0; d < factors.size(); ++d) {
          if (static_cast<int>(d) == skip_dimension || o.choices.size() <= d || o.choices[d] < 0) continue;
          r -= factors[d][static_cast<size_t>(o.choices[d])];
        }
        return r;
      };
      double sum = 0.0, count = 0.0;
      for (const Observation& o : observations_) {
        if (std::isnan(o.log_residual[m])) continue;
        sum += residual(o, -2);
        count += 1.0;
      }
      global_[m] = sum / (count + kPrior);
      for (size_t d = 0; d < factors.size(); ++d) {
        std::vector<double> sums(factors[d].size(), 0.0), counts(factors[d].size(), 0.0);
        for (const Observation& o : observations_) {
          if (std::isnan(o.log_residual[m]) || o.choices.size() <= d || o.choices[d] < 0) continue;
          sums[static_cast<size_t>(o.choices[d])] += residual(o, static_cast<int>(d));
          counts[static_cast<size_t>(o.choices[d])] += 1.0;
        }
        for (size_t c = 0; c < factors[d].size(); ++c) factors[d][c] = sums[c] / (counts[c] + kPrior);
      }
    }
  }
}

json CostModel::calibration_json() const {
  json kernels = json::object();
  for (const auto& [key, times] : kernels_) kernels[key] = times.to_json();
  return {{"kernels", kernels},
          {"copy_bandwidth_bytes_per_s", copy_bandwidth_},
          {"other_decode_s", other_decode_s_},
          {"other_prefill_per_row_s", other_prefill_per_row_s_},
          {"memory_offset_bytes", memory_offset_},
          {"trace_tokens", trace_.n_tokens()},
          {"observations", observations_.size()}};
}

}  // namespace moenav::tune
