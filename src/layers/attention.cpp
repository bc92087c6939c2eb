#include "layers/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include "backend/cpu/attention.h"
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

// Attention over the caches, once every row's keys and values are in them: the rows split into
// runs of one sequence (a prefill chunk, or a decode row), each run by KV head and into chunks of
// rows, the latest (costliest) chunks first; cpu::attention_head does the math.
void attend_rows(const ModelConfig& config, const LayerWeights& weights, int64_t layer,
                 std::span<const BatchRow> rows, const float* q, float* attention, ThreadPool& pool) {
  struct Task {
    int64_t row_begin, row_end, kv_head;
  };
  constexpr int64_t kQueriesPerTask = 128;
  const int64_t n_rows = static_cast<int64_t>(rows.size());
  const int64_t head_dim = config.head_dim;
  const int64_t group = config.n_heads / config.n_kv_heads;
  const int64_t rows_per_task = std::max<int64_t>(1, kQueriesPerTask / group);
  // Reused across calls; workers must reach the caller's through these references (naming a
  // thread_local inside the lambda would give each worker its own).
  thread_local std::vector<int64_t> first_storage, last_storage;
  thread_local std::vector<Task> task_storage;
  std::vector<int64_t>& first = first_storage;  // [T] visible positions of each row
  std::vector<int64_t>& last = last_storage;
  std::vector<Task>& tasks = task_storage;
  first.resize(static_cast<size_t>(n_rows));
  last.resize(static_cast<size_t>(n_rows));
  tasks.clear();
  const bool sliding = config.uses_sliding_window(layer);
  for (int64_t r = 0; r < n_rows; ++r) {
    const int64_t position = rows[static_cast<size_t>(r)].position;
    first[static_cast<size_t>(r)] = sliding ? std::max<int64_t>(0, position - config.sliding_window + 1) : 0;
    last[static_cast<size_t>(r)] = position;
  }
  for (int64_t begin = 0; begin < n_rows;) {
    int64_t end = begin + 1;
    while (end < n_rows && rows[static_cast<size_t>(end)].cache == rows[static_cast<size_t>(begin)].cache) ++end;
    for (int64_t chunk = begin; chunk < end; chunk += rows_per_task) {
      for (int64_t kv_head = 0; kv_head < config.n_kv_heads; ++kv_head) {
        tasks.push_back({chunk, std::min(end, chunk + rows_per_task), kv_head});
      }
    }
    begin = end;
  }
  std::reverse(tasks.begin(), tasks.end());
  const float scale = config.attention_scale > 0.0f ? config.attention_scale
                                                    : 1.0f / std::sqrt(static_cast<float>(head_dim));
  const float* sinks = static_cast<const float*>(weights.attn_sinks.data);
  auto run_task = [&](const Task& task) {
    KvCache& cache = *rows[static_cast<size_t>(task.row_begin)].cache;
    cpu::AttentionHeadArgs args;
    args.queries = q + task.row_begin * config.q_dim() + task.kv_head * group * head_dim;
    args.row_stride = config.q_dim();
    args.n_rows = task.row_end - task.row_begin;
    args.group = group;
    args.head_dim = head_dim;
    args.scale = scale;
    cache.bind_head(layer, task.kv_head, args);
    args.first = first.data() + task.row_begin;
    args.last = last.data() + task.row_begin;
    args.sinks = sinks ? sinks + task.kv_head * group : nullptr;
    args.output = attention + task.row_begin * config.q_dim() + task.kv_head * group * head_dim;
    args.output_stride = config.q_dim();
    cpu::attention_head(args);
  };
  if (tasks.size() == 1) return run_task(tasks[0]);
  std::atomic<size_t> next{0};
  pool.run([&](int, int) {
    for (size_t i = next++; i < tasks.size(); i = next++) run_task(tasks[i]);
  });
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
  const int64_t q_dim = config.q_dim();
  const int64_t kv_dim = config.kv_dim();
  float* q = work.q.data();  // [T, q_dim]
  float* k = work.k.data();  // [T, kv_dim]
  float* v = work.v.data();  // [T, kv_dim]
  const TensorView* projections[] = {&weights.attn_q, &weights.attn_k, &weights.attn_v};
  float* const projected[] = {q, k, v};
  cpu::matmul_shared_input(projections, normed, n_rows, projected, pool);
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
      row.cache->store_key(layer, row.position, k_row);
      row.cache->store_value(layer, row.position, v + r * kv_dim);
    }
  });

  float* attention = work.attention.data();  // [T, q_dim]
  attend_rows(config, weights, layer, rows, q, attention, pool);
  cpu::matmul(weights.attn_output, attention, n_rows, output, pool);
  add_bias(output, weights.attn_output_bias, n_rows, config.hidden);
}

}  // namespace moenav
