#include "layers/moe/layer_k_allocation.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "backend/cpu/matmul.h"
#include "core/thread_pool.h"
#include "layers/ffn.h"
#include "layers/moe/router.h"
#include "layers/norm.h"
#include "quant/quant.h"

namespace moenav {
namespace {

constexpr int64_t kProbeTokens = 64;
constexpr uint32_t kProbeSeed = 20240601;

// Routed output of the probe rows with the top-k experts: [T, hidden].
std::vector<double> routed_output(const ModelConfig& config, const LayerWeights& layer,
                                  const std::vector<float>& logits, int64_t k,
                                  const std::vector<std::vector<float>>& expert_outputs) {
  Routing routing;
  select_experts(config, logits.data(), kProbeTokens, k, nullptr, routing,
                 static_cast<const float*>(layer.expert_selection_bias.data));
  std::vector<double> output(static_cast<size_t>(kProbeTokens * config.hidden), 0.0);
  for (int64_t t = 0; t < kProbeTokens; ++t) {
    for (int64_t slot = 0; slot < k; ++slot) {
      const int32_t expert = routing.expert(t, slot);
      if (expert < 0) continue;
      const float* row = expert_outputs[static_cast<size_t>(expert)].data() + t * config.hidden;
      for (int64_t i = 0; i < config.hidden; ++i) {
        output[static_cast<size_t>(t * config.hidden + i)] += routing.weight(t, slot) * row[i];
      }
    }
  }
  return output;
}

// D(k) for k = 1..max_k of one layer on the probe rows.
std::vector<double> layer_distortion(const ModelConfig& config, const LayerWeights& layer,
                                     const std::vector<float>& probe, int64_t max_k,
                                     Workspace& work, ThreadPool& pool) {
  const int64_t hidden = config.hidden;
  std::vector<float> normed(probe.size());  // [T, hidden]
  rms_norm(probe.data(), static_cast<const float*>(layer.ffn_norm.data), normed.data(), kProbeTokens,
           hidden, config.norm_eps);
  std::vector<float> logits(static_cast<size_t>(kProbeTokens * config.n_experts));  // [T, n_experts]
  cpu::matmul(layer.router, normed.data(), kProbeTokens, logits.data(), pool);
  if (!layer.router_bias.empty()) {
    const float* bias = static_cast<const float*>(layer.router_bias.data);
    for (int64_t i = 0; i < kProbeTokens * config.n_experts; ++i) logits[static_cast<size_t>(i)] += bias[i % config.n_experts];
  }
  std::vector<std::vector<float>> outputs(static_cast<size_t>(config.n_experts));  // [E][T, hidden]
  for (int64_t e = 0; e < config.n_experts; ++e) {
    outputs[static_cast<size_t>(e)].resize(static_cast<size_t>(kProbeTokens * hidden));
    ffn_forward(layer.experts[static_cast<size_t>(e)], normed.data(), kProbeTokens,
                outputs[static_cast<size_t>(e)].data(), work, pool, expert_activation(config));
  }
  const std::vector<double> reference = routed_output(config, layer, logits, config.n_experts_used, outputs);
  double norm = 1e-30;
  for (double v : reference) norm += v * v;
  std::vector<double> distortion(static_cast<size_t>(max_k + 1), 0.0);
  for (int64_t k = 1; k <= max_k; ++k) {
    const std::vector<double> output = routed_output(config, layer, logits, k, outputs);
    double error = 0.0;
    for (size_t i = 0; i < output.size(); ++i) error += (output[i] - reference[i]) * (output[i] - reference[i]);
    distortion[static_cast<size_t>(k)] = error / norm;
  }
  return distortion;
}

}  // namespace

Expected<std::vector<int64_t>> allocate_layer_k(const ModelConfig& config, const ModelWeights& weights,
                                                double average_k, ThreadPool& pool) {
  const int64_t max_k = std::min(config.n_experts, std::max(2 * config.n_experts_used,
                                                            static_cast<int64_t>(std::ceil(average_k)) + 1));
  if (!(average_k >= 1.0 && average_k <= static_cast<double>(max_k))) {
    return Status::errorf("routing.allocation.average_k = {} must be between 1 and {} (n_experts = {})",
                          average_k, max_k, config.n_experts);
  }
  // Probe rows: embeddings of random vocabulary entries.
  std::mt19937 random(kProbeSeed);
  std::uniform_int_distribution<int64_t> pick(0, config.vocab - 1);
  std::vector<float> probe(static_cast<size_t>(kProbeTokens * config.hidden));  // [T, hidden]
  for (int64_t t = 0; t < kProbeTokens; ++t) {
    quant::dequantize_row(weights.token_embedding.dtype, weights.token_embedding.row(pick(random)),
                          probe.data() + t * config.hidden, config.hidden);
  }
  Workspace work;
  work.ffn_gate.resize(static_cast<size_t>(kProbeTokens * config.expert_ffn));
  work.ffn_up.resize(static_cast<size_t>(kProbeTokens * config.expert_ffn));
  std::vector<int64_t> layers;
  std::vector<std::vector<double>> distortion;
  for (int64_t l = 0; l < config.n_layers; ++l) {
    if (!config.is_moe_layer(l)) continue;
    layers.push_back(l);
    distortion.push_back(layer_distortion(config, weights.layers[static_cast<size_t>(l)], probe, max_k, work, pool));
  }
  std::vector<int64_t> k_per_layer(static_cast<size_t>(config.n_layers), config.n_experts_used);
  std::vector<int64_t> k(layers.size(), 1);
  const auto budget = std::clamp<int64_t>(std::llround(average_k * static_cast<double>(layers.size())),
                                          static_cast<int64_t>(layers.size()),
                                          static_cast<int64_t>(layers.size()) * max_k);
  for (int64_t spent = static_cast<int64_t>(layers.size()); spent < budget; ++spent) {
    size_t best = layers.size();
    double best_gain = -1e300;
    for (size_t i = 0; i < layers.size(); ++i) {
      if (k[i] >= max_k) continue;
      const double gain = distortion[i][static_cast<size_t>(k[i])] - distortion[i][static_cast<size_t>(k[i] + 1)];
      if (gain > best_gain) {
        best_gain = gain;
        best = i;
      }
    }
    if (best == layers.size()) break;
    ++k[best];
  }
  for (size_t i = 0; i < layers.size(); ++i) k_per_layer[static_cast<size_t>(layers[i])] = k[i];
  return k_per_layer;
}

}  // namespace moenav
