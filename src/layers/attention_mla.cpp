#include "layers/attention_mla.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/cpu/matmul.h"
#include "layers/norm.h"

namespace moenav {
namespace {

// Applies one head's matrix (a slice of a stacked [n_heads, out, in] tensor) to that head's
// columns of every row: destination[r, head, :] = matrix[head] . source[r, head, :].
void per_head_matmul(const TensorView& stacked, int64_t head, const float* source,
                     int64_t source_stride, float* destination, int64_t destination_stride,
                     int64_t n_rows, Workspace& work, ThreadPool& pool) {
  const TensorView matrix = stacked.slice(head);
  const int64_t in = matrix.cols(), out = matrix.rows();
  float* head_in = work.mla_head_in.data();    // [T, in]
  float* head_out = work.mla_head_out.data();  // [T, out]
  for (int64_t r = 0; r < n_rows; ++r) {
    std::copy(source + r * source_stride, source + r * source_stride + in, head_in + r * in);
  }
  cpu::matmul(matrix, head_in, n_rows, head_out, pool);
  for (int64_t r = 0; r < n_rows; ++r) {
    std::copy(head_out + r * out, head_out + (r + 1) * out, destination + r * destination_stride);
  }
}

// One head of one row against its sequence's cached latents [0, position].
void attend_latent(const float* q_latent, const float* q_rope, KvCache& cache, int64_t layer,
                   int64_t position, int64_t rank, int64_t rope_dim, float scale, float* scores,
                   float* output) {
  float max_score = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j <= position; ++j) {
    const float* latent = cache.key_row(layer, j);  // [rank + rope_dim]
    float dot = 0.0f;
    for (int64_t i = 0; i < rank; ++i) dot += q_latent[i] * latent[i];
    for (int64_t i = 0; i < rope_dim; ++i) dot += q_rope[i] * latent[rank + i];
    scores[j] = dot * scale;
    max_score = std::max(max_score, scores[j]);
  }
  float sum = 0.0f;
  for (int64_t j = 0; j <= position; ++j) {
    scores[j] = std::exp(scores[j] - max_score);
    sum += scores[j];
  }
  std::fill(output, output + rank, 0.0f);
  for (int64_t j = 0; j <= position; ++j) {
    const float* latent = cache.key_row(layer, j);
    const float p = scores[j] / sum;
    for (int64_t i = 0; i < rank; ++i) output[i] += p * latent[i];
  }
}

// Queries [T, n_heads * (qk_nope + qk_rope)] through the q LoRA or the direct projection.
void project_queries(const ModelConfig& config, const MlaWeights& mla, const float* normed,
                     int64_t n_rows, float* q, Workspace& work, ThreadPool& pool) {
  if (mla.q_a.empty()) {
    cpu::matmul(mla.q, normed, n_rows, q, pool);
    return;
  }
  float* q_a = work.mla_q_a.data();  // [T, q_lora_rank]
  cpu::matmul(mla.q_a, normed, n_rows, q_a, pool);
  rms_norm(q_a, static_cast<const float*>(mla.q_a_norm.data), q_a, n_rows, config.q_lora_rank,
           kLatentNormEps);
  cpu::matmul(mla.q_b, q_a, n_rows, q, pool);
}

}  // namespace

void mla_attention_forward(const ModelConfig& config, const LayerWeights& weights, int64_t layer,
                           const Rope& rope, std::span<const BatchRow> rows, Workspace& work,
                           const float* normed, float* output, ThreadPool& pool) {
  const MlaWeights& mla = weights.mla;
  const int64_t n_rows = static_cast<int64_t>(rows.size());
  const int64_t n_heads = config.n_heads;
  const int64_t nope = config.qk_nope_dim, rope_dim = config.qk_rope_dim;
  const int64_t rank = config.kv_lora_rank, v_dim = config.v_head_dim;
  const int64_t qk_dim = nope + rope_dim, kv_width = rank + rope_dim;
  float* q = work.q.data();        // [T, n_heads * qk_dim]
  float* kv = work.mla_kv.data();  // [T, kv_width]
  project_queries(config, mla, normed, n_rows, q, work, pool);
  cpu::matmul(mla.kv_a, normed, n_rows, kv, pool);

  // Latent norm, RoPE on the rotary parts and the cache append, row by row.
  pool.parallel_for(n_rows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const BatchRow& row = rows[static_cast<size_t>(r)];
      float* kv_row = kv + r * kv_width;
      rms_norm(kv_row, static_cast<const float*>(mla.kv_a_norm.data), kv_row, 1, rank,
               kLatentNormEps);
      rope.apply(kv_row + rank, 1, rope_dim, row.position);
      rope.apply(q + r * n_heads * qk_dim + nope, n_heads, qk_dim, row.position);
      row.cache->store_key(layer, row.position, kv_row);
    }
  });

  // Absorb k_b into the queries: q_latent[r, h] = k_b[h] . q_nope[r, h].
  float* q_latent = work.mla_q_latent.data();  // [T, n_heads, rank]
  for (int64_t head = 0; head < n_heads; ++head) {
    per_head_matmul(mla.k_b, head, q + head * qk_dim, n_heads * qk_dim, q_latent + head * rank,
                    n_heads * rank, n_rows, work, pool);
  }

  const float scale = config.attention_scale > 0.0f ? config.attention_scale
                                                    : 1.0f / std::sqrt(static_cast<float>(qk_dim));
  const int64_t scores_stride = static_cast<int64_t>(work.scores.size()) / pool.size();
  float* o_latent = work.mla_o_latent.data();  // [T, n_heads, rank]
  pool.run([&](int thread, int n_threads) {
    float* scores = work.scores.data() + thread * scores_stride;
    const int64_t tasks = n_rows * n_heads;
    for (int64_t task = tasks * thread / n_threads; task < tasks * (thread + 1) / n_threads;
         ++task) {
      const int64_t r = task / n_heads, head = task % n_heads;
      const BatchRow& row = rows[static_cast<size_t>(r)];
      attend_latent(q_latent + (r * n_heads + head) * rank,
                    q + r * n_heads * qk_dim + head * qk_dim + nope, *row.cache, layer,
                    row.position, rank, rope_dim, scale, scores,
                    o_latent + (r * n_heads + head) * rank);
    }
  });

  // Values: attention[r, h] = v_b[h] . o_latent[r, h], then the output projection.
  float* attention = work.attention.data();  // [T, n_heads * v_dim]
  for (int64_t head = 0; head < n_heads; ++head) {
    per_head_matmul(mla.v_b, head, o_latent + head * rank, n_heads * rank, attention + head * v_dim,
                    n_heads * v_dim, n_rows, work, pool);
  }
  cpu::matmul(weights.attn_output, attention, n_rows, output, pool);
}

}  // namespace moenav
