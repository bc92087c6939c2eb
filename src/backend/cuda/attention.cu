// Causal attention over the f32 or f16 KV cache, flash-decoding style: the visible keys of each
// (token, head) are cut into splits of kSplitKeys positions, one warp per (token, head, split)
// runs an online softmax over its keys (lane i holds dimensions i, i + 32, ...), and a second
// kernel merges the splits' (max, sum, weighted values), adding the sink logit when there is
// one. A long context thus spreads over many warps even for a single decoded token.
#include <cmath>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda_ops.h"

namespace moenav::cuda {
namespace {

constexpr int64_t kSplitKeys = 256;
// Lane i holds dimensions i, i + 32, ... up to PerLane of them: 8 for head dims up to 256, 18
// for MLA's 576 (a 512 latent and a 64 rotary key).
constexpr int kShortPerLane = 8;
constexpr int kLongPerLane = 18;
constexpr int kWarpsPerBlock = 4;

// The partial result of split item i is partials[i * (D + 2) ...]: max, sum, acc[D].

__device__ inline float kv_float(float x) { return x; }
__device__ inline float kv_float(__half x) { return __half2float(x); }

template <typename KV, int PerLane>
__global__ void attention_split_kernel(AttentionArgs args, int64_t n_splits, float* partials) {
  const int lane = threadIdx.x % 32;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (item >= args.n_tokens * args.n_heads * n_splits) return;
  const int64_t split = item % n_splits;
  const int64_t head = (item / n_splits) % args.n_heads;
  const int64_t token = item / (n_splits * args.n_heads);
  const int64_t kv_head = head / (args.n_heads / args.n_kv_heads);
  const int64_t D = args.head_dim;
  const int64_t position = args.positions ? args.positions[token] : args.first_position + token;
  const int64_t earliest = args.window > 0 ? max(int64_t{0}, position - args.window + 1) : 0;
  const int64_t begin = max(earliest, split * kSplitKeys);
  const int64_t end = min(position + 1, (split + 1) * kSplitKeys);

  float q[PerLane], acc[PerLane];
  const float* query = args.queries + (token * args.n_heads + head) * D;
#pragma unroll
  for (int i = 0; i < PerLane; ++i) {
    const int64_t d = lane + 32 * i;
    q[i] = d < D ? query[d] : 0.0f;
    acc[i] = 0.0f;
  }
  float running_max = -INFINITY, sum = 0.0f;
  const int64_t kv_stride = args.n_kv_heads * D;
  for (int64_t j = begin; j < end; ++j) {
    const KV* key = static_cast<const KV*>(args.keys) + j * kv_stride + kv_head * D;
    const KV* value = static_cast<const KV*>(args.values) + j * kv_stride + kv_head * D;
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < PerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < D) dot += q[i] * kv_float(key[d]);
    }
    const float logit = warp_sum(dot) * args.scale;
    const float new_max = fmaxf(running_max, logit);
    const float correction = expf(running_max - new_max);
    const float p = expf(logit - new_max);
    sum = sum * correction + p;
#pragma unroll
    for (int i = 0; i < PerLane; ++i) {
      const int64_t d = lane + 32 * i;
      acc[i] = acc[i] * correction + (d < D ? p * kv_float(value[d]) : 0.0f);
    }
    running_max = new_max;
  }
  float* out = partials + item * (D + 2);
  if (lane == 0) out[0] = running_max, out[1] = sum;
#pragma unroll
  for (int i = 0; i < PerLane; ++i) {
    const int64_t d = lane + 32 * i;
    if (d < D) out[2 + d] = acc[i];
  }
}

// One warp per (token, head): output = sum_s e^(m_s - M) acc_s / (sum_s e^(m_s - M) l_s [+ e^(sink - M)]).
template <int PerLane>
__global__ void attention_merge_kernel(AttentionArgs args, int64_t n_splits,
                                       const float* partials) {
  const int lane = threadIdx.x % 32;
  const int64_t pair = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (pair >= args.n_tokens * args.n_heads) return;
  const int64_t head = pair % args.n_heads;
  const int64_t D = args.head_dim;
  const float* first = partials + pair * n_splits * (D + 2);
  float overall = args.sinks ? args.sinks[head] : -INFINITY;
  for (int64_t s = 0; s < n_splits; ++s) overall = fmaxf(overall, first[s * (D + 2)]);
  float total = args.sinks ? expf(args.sinks[head] - overall) : 0.0f;
  float acc[PerLane] = {};
  for (int64_t s = 0; s < n_splits; ++s) {
    const float* part = first + s * (D + 2);
    if (part[0] == -INFINITY) continue;  // a split with no visible key
    const float weight = expf(part[0] - overall);
    total += weight * part[1];
#pragma unroll
    for (int i = 0; i < PerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < D) acc[i] += weight * part[2 + d];
    }
  }
  float* out = args.output + pair * D;
#pragma unroll
  for (int i = 0; i < PerLane; ++i) {
    const int64_t d = lane + 32 * i;
    if (d < D) out[d] = acc[i] / total;
  }
}

}  // namespace

Status attention(Context& context, const AttentionArgs& args) {
  if (args.head_dim < 1 || args.head_dim > 32 * kLongPerLane) {
    return Status::errorf("CUDA attention: head dim {} (supported: 1 to {})", args.head_dim,
                          32 * kLongPerLane);
  }
  if (args.n_kv_heads < 1 || args.n_heads % args.n_kv_heads != 0) {
    return Status::errorf("CUDA attention: {} query heads do not share {} KV heads evenly",
                          args.n_heads, args.n_kv_heads);
  }
  if (args.kv_type != DType::F32 && args.kv_type != DType::F16) {
    return Status::errorf("CUDA attention: a {} KV cache (supported: f32, f16)", dtype_name(args.kv_type));
  }
  if (args.n_tokens <= 0) return ok_status();
  const int64_t bound = args.max_positions > 0 ? args.max_positions : args.first_position + args.n_tokens;
  const int64_t n_splits = ceil_div(bound, kSplitKeys);
  const int64_t items = args.n_tokens * args.n_heads * n_splits;
  MOENAV_ASSIGN_OR_RETURN(void* area,
                          scratch(context, items * (args.head_dim + 2) * int64_t{sizeof(float)}));
  auto* partials = static_cast<float*>(area);
  cudaStream_t stream = context.impl().stream;
  const dim3 block(32 * kWarpsPerBlock);
  const bool is_long = args.head_dim > 32 * kShortPerLane;
  const bool is_half = args.kv_type == DType::F16;
  auto split = is_long ? (is_half ? attention_split_kernel<__half, kLongPerLane>
                                  : attention_split_kernel<float, kLongPerLane>)
                       : (is_half ? attention_split_kernel<__half, kShortPerLane>
                                  : attention_split_kernel<float, kShortPerLane>);
  MOENAV_RETURN_IF_ERROR(launch("attention", split,
                                static_cast<unsigned>(ceil_div(items, kWarpsPerBlock)), block,
                                stream, args, n_splits, partials));
  const int64_t pairs = args.n_tokens * args.n_heads;
  return launch("attention merge",
                is_long ? attention_merge_kernel<kLongPerLane> : attention_merge_kernel<kShortPerLane>,
                static_cast<unsigned>(ceil_div(pairs, kWarpsPerBlock)), block, stream, args,
                n_splits, partials);
}

}  // namespace moenav::cuda
