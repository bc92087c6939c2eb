#include "layers/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/cpu/matmul.h"
#include "layers/norm.h"

namespace moenav {
namespace {

void add_bias(float* rows, const TensorView& bias, int64_t n_rows, int64_t width) {
  if (bias.empty()) return;
  const float* b = static_cast<const float*>(bias.data);
  for (int64_t r = 0; r < n_rows; ++r)
    for (int64_t i = 0; i < width; ++i) rows[r * width + i] += b[i];
}

// One query head of one row against its sequence's cached keys/values [first, position]. A sink
// (gpt-oss) is one more logit in the softmax denominator that contributes no value.
struct AttendOptions {
  int64_t first = 0;  // the earliest visible position (sliding window)
  float scale = 1.0f;
  const float* sink = nullptr;
};

void attend(const float* query, KvCache& cache, int64_t layer, int64_t position, int64_t kv_offset,
            int64_t head_dim, const AttendOptions& options, float* scores, float* output) {
  float max_score = options.sink ? *options.sink : -std::numeric_limits<float>::infinity();
  for (int64_t j = options.first; j <= position; ++j) {
    const float* key = cache.keys(layer, j) + kv_offset;
    float dot = 0.0f;
    for (int64_t i = 0; i < head_dim; ++i) dot += query[i] * key[i];
    scores[j] = dot * options.scale;
    max_score = std::max(max_score, scores[j]);
  }
  float sum = options.sink ? std::exp(*options.sink - max_score) : 0.0f;
  for (int64_t j = options.first; j <= position; ++j) {
    scores[j] = std::exp(scores[j] - max_score);
    sum += scores[j];
  }
  std::fill(output, output + head_dim, 0.0f);
  for (int64_t j = options.first; j <= position; ++j) {
    const float* value = cache.values(layer, j) + kv_offset;
    const float p = scores[j] / sum;
    for (int64_t i = 0; i < head_dim; ++i) output[i] += p * value[i];
  }
}

// Per-head (Qwen3) or whole-projection (OLMoE) RMSNorm of one row's q and k.
void normalize_qk(const ModelConfig& config, const LayerWeights& weights, float* q_row,
                  float* k_row) {
  if (!config.qk_norm) return;
  const bool full = config.qk_norm_full_width;
  const int64_t q_width = full ? config.q_dim() : config.head_dim;
  const int64_t k_width = full ? config.kv_dim() : config.head_dim;
  rms_norm(q_row, static_cast<const float*>(weights.attn_q_norm.data), q_row,
           config.q_dim() / q_width, q_width, config.norm_eps);
  rms_norm(k_row, static_cast<const float*>(weights.attn_k_norm.data), k_row,
           config.kv_dim() / k_width, k_width, config.norm_eps);
}

}  // namespace

void attention_forward(const ModelConfig& config, const LayerWeights& weights, int64_t layer,
                       const Rope& rope, std::span<const BatchRow> rows, Workspace& work,
                       const float* normed, float* output, ThreadPool& pool) {
  const int64_t n_rows = static_cast<int64_t>(rows.size());
  const int64_t head_dim = config.head_dim;
  const int64_t q_dim = config.q_dim();
  const int64_t kv_dim = config.kv_dim();
  float* q = work.q.data();  // [T, q_dim]
  float* k = work.k.data();  // [T, kv_dim]
  float* v = work.v.data();  // [T, kv_dim]
  cpu::matmul(weights.attn_q, normed, n_rows, q, pool);
  cpu::matmul(weights.attn_k, normed, n_rows, k, pool);
  cpu::matmul(weights.attn_v, normed, n_rows, v, pool);
  add_bias(q, weights.attn_q_bias, n_rows, q_dim);
  add_bias(k, weights.attn_k_bias, n_rows, kv_dim);
  add_bias(v, weights.attn_v_bias, n_rows, kv_dim);

  // Per-head norm, RoPE and the cache append, row by row.
  pool.parallel_for(n_rows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* q_row = q + r * q_dim;
      float* k_row = k + r * kv_dim;
      normalize_qk(config, weights, q_row, k_row);
      const BatchRow& row = rows[static_cast<size_t>(r)];
      rope.apply(q_row, config.n_heads, row.position);
      rope.apply(k_row, config.n_kv_heads, row.position);
      std::copy(k_row, k_row + kv_dim, row.cache->keys(layer, row.position));
      std::copy(v + r * kv_dim, v + (r + 1) * kv_dim, row.cache->values(layer, row.position));
    }
  });

  // Every (row, head) pair is independent once all rows are in the caches.
  const int64_t group = config.n_heads / config.n_kv_heads;
  const bool sliding = config.uses_sliding_window(layer);
  const float scale = config.attention_scale > 0.0f
                          ? config.attention_scale
                          : 1.0f / std::sqrt(static_cast<float>(head_dim));
  const float* sinks = static_cast<const float*>(weights.attn_sinks.data);
  const int64_t scores_stride = static_cast<int64_t>(work.scores.size()) / pool.size();
  float* attention = work.attention.data();  // [T, q_dim]
  pool.run([&](int thread, int n_threads) {
    float* scores = work.scores.data() + thread * scores_stride;
    const int64_t tasks = n_rows * config.n_heads;
    for (int64_t task = tasks * thread / n_threads; task < tasks * (thread + 1) / n_threads; ++task) {
      const int64_t r = task / config.n_heads;
      const int64_t head = task % config.n_heads;
      const BatchRow& row = rows[static_cast<size_t>(r)];
      AttendOptions options;
      options.first = sliding ? std::max<int64_t>(0, row.position - config.sliding_window + 1) : 0;
      options.scale = scale;
      options.sink = sinks ? sinks + head : nullptr;
      attend(q + r * q_dim + head * head_dim, *row.cache, layer, row.position,
             (head / group) * head_dim, head_dim, options, scores,
             attention + r * q_dim + head * head_dim);
    }
  });
  cpu::matmul(weights.attn_output, attention, n_rows, output, pool);
  add_bias(output, weights.attn_output_bias, n_rows, config.hidden);
}

}  // namespace moenav
