// Router top-k on the GPU: one warp per token, each lane holding the scores of experts lane,
// lane + 32, ...; the k winners are found by k warp-wide argmax reductions (ties to the lower
// index, as torch.topk and select_experts break them).
#include <cmath>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda_ops.h"

namespace moenav::cuda {
namespace {

constexpr int kMaxPerLane = 8;  // 256 experts
constexpr int kMaxK = 16;
constexpr int kWarpsPerBlock = 4;

__global__ void router_kernel(RouterArgs args) {
  const int lane = threadIdx.x % 32;
  const int64_t token = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (token >= args.n_tokens) return;
  const int n_experts = static_cast<int>(args.n_experts);
  const float* logits = args.logits + token * args.n_experts;
  float score[kMaxPerLane], choice[kMaxPerLane];
  bool live[kMaxPerLane];
  float largest = -INFINITY;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int expert = lane + 32 * i;
    live[i] = expert < n_experts;
    score[i] = live[i] ? logits[expert] : -INFINITY;
    largest = fmaxf(largest, score[i]);
  }
  if (args.score == RouterScore::Softmax) {
    largest = warp_max(largest);
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      score[i] = live[i] ? expf(score[i] - largest) : 0.0f;
      sum += score[i];
    }
    sum = warp_sum(sum);
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) score[i] /= sum;
  } else if (args.score == RouterScore::Sigmoid) {
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) score[i] = 1.0f / (1.0f + expf(-score[i]));
  }
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int expert = lane + 32 * i;
    choice[i] = score[i] + (args.selection_bias && live[i] ? args.selection_bias[expert] : 0.0f);
  }

  int chosen[kMaxK];
  float selected[kMaxK];
  for (int slot = 0; slot < args.k; ++slot) {
    float best = -INFINITY, best_score = 0.0f;
    int best_expert = 0x7fffffff;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int expert = lane + 32 * i;
      if (live[i] && (choice[i] > best || best_expert == 0x7fffffff)) {
        best = choice[i], best_expert = expert, best_score = score[i];
      }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float other = __shfl_xor_sync(kFullMask, best, offset);
      const int other_expert = __shfl_xor_sync(kFullMask, best_expert, offset);
      const float other_score = __shfl_xor_sync(kFullMask, best_score, offset);
      if (other > best || (other == best && other_expert < best_expert)) {
        best = other, best_expert = other_expert, best_score = other_score;
      }
    }
    chosen[slot] = best_expert;
    selected[slot] = best_score;
    if (best_expert % 32 == lane) live[best_expert / 32] = false;
  }

  if (args.score == RouterScore::SoftmaxOfTopK) {
    float top = -INFINITY, sum = 0.0f;
    for (int slot = 0; slot < args.k; ++slot) top = fmaxf(top, selected[slot]);
    for (int slot = 0; slot < args.k; ++slot) {
      selected[slot] = expf(selected[slot] - top);
      sum += selected[slot];
    }
    for (int slot = 0; slot < args.k; ++slot) selected[slot] /= sum;
  } else if (args.normalize) {
    float sum = 0.0f;
    for (int slot = 0; slot < args.k; ++slot) sum += selected[slot];
    for (int slot = 0; slot < args.k; ++slot) selected[slot] /= sum + 1e-20f;
  }
  if (lane == 0) {
    for (int slot = 0; slot < args.k; ++slot) {
      args.experts[token * args.k + slot] = chosen[slot];
      args.weights[token * args.k + slot] = selected[slot] * args.scale;
    }
  }
}

}  // namespace

Status router_top_k(Context& context, const RouterArgs& args) {
  if (args.n_experts < 1 || args.n_experts > 32 * kMaxPerLane) {
    return Status::errorf("CUDA router: {} experts (supported: 1 to {})", args.n_experts,
                          32 * kMaxPerLane);
  }
  if (args.k < 1 || args.k > kMaxK || args.k > args.n_experts) {
    return Status::errorf("CUDA router: top-{} of {} experts (k must be 1 to {})", args.k,
                          args.n_experts, kMaxK);
  }
  if (args.n_tokens <= 0) return ok_status();
  const unsigned blocks = static_cast<unsigned>(ceil_div(args.n_tokens, kWarpsPerBlock));
  return launch("router_top_k", router_kernel, blocks, 32 * kWarpsPerBlock, context.impl().stream,
                args);
}

}  // namespace moenav::cuda
