// The CUDA decoder's attention: grouped-query attention over the device KV cache, and
// multi-head latent attention over the latent cache (mla_attention_forward's steps).
#include <cmath>

#include "layers/attention_mla.h"
#include "model/model.h"
#include "runtime/cuda_decoder_state.h"

namespace moenav {

Status CudaDecoder::attention(int64_t l, std::span<const Segment> segments) {
  const ModelConfig& c = model_->config;
  const DeviceLayer& layer = weights_->layers[static_cast<size_t>(l)];
  Buffers& b = *buffers_;
  cuda::Context& context = *context_;
  int64_t n_rows = 0;
  for (const Segment& segment : segments) n_rows += segment.n_tokens;
  float* q = b.q.as<float>();
  float* k = b.k_rows.as<float>();
  float* v = b.v.as<float>();
  const cuda::MatmulPart projections[] = {{layer.q, q}, {layer.k, k}, {layer.v, v}};
  MOENAV_RETURN_IF_ERROR(cuda::matmul_parts(context, projections, 3, b.normed.as<float>(), n_rows));
  MOENAV_RETURN_IF_ERROR(cuda::add_bias(context, q, layer.q_bias, n_rows, c.q_dim()));
  MOENAV_RETURN_IF_ERROR(cuda::add_bias(context, k, layer.k_bias, n_rows, c.kv_dim()));
  MOENAV_RETURN_IF_ERROR(cuda::add_bias(context, v, layer.v_bias, n_rows, c.kv_dim()));
  if (c.qk_norm) {
    const int64_t q_width = c.qk_norm_full_width ? c.q_dim() : c.head_dim;
    const int64_t k_width = c.qk_norm_full_width ? c.kv_dim() : c.head_dim;
    MOENAV_RETURN_IF_ERROR(cuda::rms_norm(context, q, layer.q_norm, q, n_rows * c.q_dim() / q_width, q_width, c.norm_eps));
    MOENAV_RETURN_IF_ERROR(cuda::rms_norm(context, k, layer.k_norm, k, n_rows * c.kv_dim() / k_width, k_width, c.norm_eps));
  }
  cuda::RopeArgs rope;
  rope.n_tokens = n_rows;
  rope.head_stride = c.head_dim;
  rope.rotary_dim = weights_->rope.rotary_dim();
  rope.inverse_frequency = weights_->inverse_frequency;
  rope.positions = b.positions.as<int32_t>();
  rope.neox = weights_->rope.style() == RopeStyle::Neox;
  rope.attention_factor = weights_->rope.attention_factor();
  rope.x = q, rope.n_heads = c.n_heads, rope.token_stride = c.q_dim();
  rope.keys = k, rope.n_key_heads = c.n_kv_heads, rope.key_token_stride = c.kv_dim();
  MOENAV_RETURN_IF_ERROR(cuda::rope(context, rope));

  const float scale = c.attention_scale > 0.0f ? c.attention_scale
                                               : 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  int64_t row = 0;
  for (const Segment& segment : segments) {
    DeviceKvCache& cache = **segment.cache;
    const int32_t* positions = b.positions.as<int32_t>() + row;
    MOENAV_RETURN_IF_ERROR(cuda::store_kv(context, k + row * c.kv_dim(), cache.keys_at(l, 0), c.kv_dim(), positions,
                                          segment.n_tokens, cache.type, v + row * c.kv_dim(),
                                          cache.values_at(l, 0)));
    cuda::AttentionArgs args;
    args.queries = q + row * c.q_dim();
    args.keys = cache.keys_at(l, 0);
    args.values = cache.values_at(l, 0);
    args.kv_type = cache.type;
    args.sinks = layer.sinks;
    args.output = b.attention.as<float>() + row * c.q_dim();
    args.n_tokens = segment.n_tokens;
    args.n_heads = c.n_heads;
    args.n_kv_heads = c.n_kv_heads;
    args.head_dim = c.head_dim;
    args.positions = positions;
    args.max_positions = graphing_ ? cache.capacity : segment.first_position + segment.n_tokens;
    args.window = c.uses_sliding_window(l) ? c.sliding_window : 0;
    args.scale = scale;
    MOENAV_RETURN_IF_ERROR(cuda::attention(context, args));
    row += segment.n_tokens;
  }
  MOENAV_RETURN_IF_ERROR(cuda::matmul(context, layer.o, b.attention.as<float>(), n_rows, b.block_output.as<float>()));
  return cuda::add_bias(context, b.block_output.as<float>(), layer.o_bias, n_rows, c.hidden);
}

// mla_attention_forward on the device. The latent attention is multi-query attention with one
// KV head of width latent + rotary: queries [q_latent | q_rope] against the cached rows
// [latent | k_rope], whose values are the same rows (the output's rotary tail is unused).
Status CudaDecoder::mla_attention(int64_t l, std::span<const Segment> segments) {
  const ModelConfig& c = model_->config;
  const DeviceMla& mla = weights_->layers[static_cast<size_t>(l)].mla;
  Buffers& b = *buffers_;
  cuda::Context& context = *context_;
  int64_t n_rows = 0;
  for (const Segment& segment : segments) n_rows += segment.n_tokens;
  const int64_t heads = c.n_heads, nope = c.qk_nope_dim, rope_dim = c.qk_rope_dim;
  const int64_t rank = c.kv_lora_rank, v_dim = c.v_head_dim;
  const int64_t qk = nope + rope_dim, width = rank + rope_dim;  // width: a cached row
  const float* normed = b.normed.as<float>();
  float* q = b.q.as<float>();      // [T, heads, qk]
  float* kv = b.mla_kv.as<float>();  // [T, width]
  if (mla.q_a.data == nullptr) {
    MOENAV_RETURN_IF_ERROR(cuda::matmul(context, mla.q, normed, n_rows, q));
  } else {
    float* q_a = b.mla_q_a.as<float>();
    MOENAV_RETURN_IF_ERROR(cuda::matmul(context, mla.q_a, normed, n_rows, q_a));
    MOENAV_RETURN_IF_ERROR(cuda::rms_norm(context, q_a, mla.q_a_norm, q_a, n_rows, c.q_lora_rank, kLatentNormEps));
    MOENAV_RETURN_IF_ERROR(cuda::matmul(context, mla.q_b, q_a, n_rows, q));
  }
  MOENAV_RETURN_IF_ERROR(cuda::matmul(context, mla.kv_a, normed, n_rows, kv));
  float* latent = b.mla_latent.as<float>();
  MOENAV_RETURN_IF_ERROR(cuda::copy_columns(context, kv, width, latent, rank, n_rows, rank));
  MOENAV_RETURN_IF_ERROR(cuda::rms_norm(context, latent, mla.kv_a_norm, latent, n_rows, rank, kLatentNormEps));
  MOENAV_RETURN_IF_ERROR(cuda::copy_columns(context, latent, rank, kv, width, n_rows, rank));
  cuda::RopeArgs rope;
  rope.n_tokens = n_rows;
  rope.rotary_dim = weights_->rope.rotary_dim();
  rope.inverse_frequency = weights_->inverse_frequency;
  rope.positions = b.positions.as<int32_t>();
  rope.neox = weights_->rope.style() == RopeStyle::Neox;
  rope.attention_factor = weights_->rope.attention_factor();
  rope.x = kv + rank, rope.n_heads = 1, rope.head_stride = width, rope.token_stride = width;
  MOENAV_RETURN_IF_ERROR(cuda::rope(context, rope));
  rope.x = q + nope, rope.n_heads = heads, rope.head_stride = qk, rope.token_stride = heads * qk;
  MOENAV_RETURN_IF_ERROR(cuda::rope(context, rope));

  // Latent queries [T, heads, width]: k_b[h] . q_nope[h], then q_rope.
  float* query = b.mla_query.as<float>();
  float* head_in = b.mla_head_in.as<float>();
  float* head_out = b.mla_head_out.as<float>();
  for (int64_t h = 0; h < heads; ++h) {
    MOENAV_RETURN_IF_ERROR(cuda::copy_columns(context, q + h * qk, heads * qk, head_in, nope, n_rows, nope));
    MOENAV_RETURN_IF_ERROR(cuda::matmul(context, mla.k_b[static_cast<size_t>(h)], head_in, n_rows, head_out));
    MOENAV_RETURN_IF_ERROR(cuda::copy_columns(context, head_out, rank, query + h * width, heads * width, n_rows, rank));
  }
  MOENAV_RETURN_IF_ERROR(cuda::copy_columns(context, q + nope, qk, query + rank, width, n_rows * heads, rope_dim));

  const float scale = c.attention_scale > 0.0f ? c.attention_scale : 1.0f / std::sqrt(static_cast<float>(qk));
  float* latent_output = b.mla_output.as<float>();
  int64_t row = 0;
  for (const Segment& segment : segments) {
    DeviceKvCache& cache = **segment.cache;
    const int32_t* positions = b.positions.as<int32_t>() + row;
    MOENAV_RETURN_IF_ERROR(cuda::store_kv(context, kv + row * width, cache.keys_at(l, 0), width, positions,
                                          segment.n_tokens, cache.type));
    cuda::AttentionArgs args;
    args.queries = query + row * heads * width;
    args.keys = cache.keys_at(l, 0);
    args.values = cache.keys_at(l, 0);
    args.kv_type = cache.type;
    args.output = latent_output + row * heads * width;
    args.n_tokens = segment.n_tokens;
    args.n_heads = heads;
    args.n_kv_heads = 1;
    args.head_dim = width;
    args.positions = positions;
    args.max_positions = graphing_ ? cache.capacity : segment.first_position + segment.n_tokens;
    args.scale = scale;
    MOENAV_RETURN_IF_ERROR(cuda::attention(context, args));
    row += segment.n_tokens;
  }
  // Values: attention[T, h] = v_b[h] . latent_output[T, h], then the output projection.
  float* attention = b.attention.as<float>();  // [T, heads * v_dim]
  for (int64_t h = 0; h < heads; ++h) {
    MOENAV_RETURN_IF_ERROR(cuda::copy_columns(context, latent_output + h * width, heads * width, head_in, rank, n_rows, rank));
    MOENAV_RETURN_IF_ERROR(cuda::matmul(context, mla.v_b[static_cast<size_t>(h)], head_in, n_rows, head_out));
    MOENAV_RETURN_IF_ERROR(cuda::copy_columns(context, head_out, v_dim, attention + h * v_dim, heads * v_dim, n_rows, v_dim));
  }
  const DeviceLayer& layer = weights_->layers[static_cast<size_t>(l)];
  MOENAV_RETURN_IF_ERROR(cuda::matmul(context, layer.o, attention, n_rows, b.block_output.as<float>()));
  return cuda::add_bias(context, b.block_output.as<float>(), layer.o_bias, n_rows, c.hidden);
}

}  // namespace moenav
