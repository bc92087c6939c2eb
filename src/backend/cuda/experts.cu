// The routed experts of decode steps whose routing was chosen on the device: every (token, slot)
// pair in one launch per projection, each pair reading its expert's matrices through a device
// table (no trip to the host for the selection), then a combine in the CPU's slot order.
//
// One warp per (weight row, pair) dequantizes the row in chunks of 32 (lane i takes chunks i,
// i + 32, ...) as matmul's matvec does; the gate and up rows of a pair share the warp, which
// applies the activation, so the FFN's first half is one kernel.
#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/dequantize_chunk.h"
#include "backend/cuda_ops.h"

namespace moenav::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

template <DType kType>
__device__ inline float row_dot(const uint8_t* row, const float* x, int64_t cols, int lane) {
  float w[kChunk];
  float acc = 0.0f;
  for (int64_t chunk = lane; chunk < cols / kChunk; chunk += 32) {
    dequantize_chunk<kType>(row, chunk, w);
    const float4* v4 = reinterpret_cast<const float4*>(x + chunk * kChunk);
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < kChunk / 4; ++i) {
      const float4 v = __ldg(v4 + i);
      sum += w[4 * i] * v.x + w[4 * i + 1] * v.y + w[4 * i + 2] * v.z + w[4 * i + 3] * v.w;
    }
    acc += sum;
  }
  return warp_sum(acc);
}

// output[pair, row] = first[e] row . x + bias, or act(first[e] row . x + bias, second[e] row . x +
// bias) with kGlu; e = selected[pair], x = input + (pair / input_share) * cols.
template <DType kType, bool kGlu>
__global__ void selected_matvec_kernel(ProjectionTables tables, const int32_t* selected, int64_t row_bytes,
                                       int64_t rows, int64_t cols, const float* input, int64_t input_share,
                                       GluArgs glu, float* output) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int64_t pair = blockIdx.y;
  if (row >= rows) return;  // whole warps leave together
  const int32_t expert = selected[pair];
  const float* x = input + (pair / input_share) * cols;
  const uint8_t* first = static_cast<const uint8_t*>(tables.first[expert]) + row * row_bytes;
  float value = row_dot<kType>(first, x, cols, lane) + bias_of(tables.first_bias, expert, row);
  if constexpr (kGlu) {
    const uint8_t* second = static_cast<const uint8_t*>(tables.second[expert]) + row * row_bytes;
    value = glu_activate(value, row_dot<kType>(second, x, cols, lane) + bias_of(tables.second_bias, expert, row), glu);
  }
  if (lane == 0) output[pair * rows + row] = value;
}

// One block per token: output[t, i] = sum over slots, in order, of weight * pair_output[p, i],
// p = t * k + slot or pair_rows[t * k + slot] (negative: skipped).
__global__ void combine_slots_kernel(const float* pair_output, const float* weights, int64_t k,
                                     int64_t width, const int32_t* pair_rows, float* output) {
  const int64_t token = blockIdx.x;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    float sum = 0.0f;
    for (int64_t slot = 0; slot < k; ++slot) {
      const int64_t pair = pair_rows == nullptr ? token * k + slot : pair_rows[token * k + slot];
      if (pair >= 0) sum += weights[pair] * pair_output[pair * width + i];
    }
    output[token * width + i] = sum;
  }
}

template <bool kGlu>
Status launch_selected(Context& context, const DeviceWeight& shape, const ProjectionTables& tables,
                       const SelectedExperts& experts, const float* input, int64_t input_share, const GluArgs& glu,
                       float* output) {
  if (experts.n_pairs <= 0 || shape.rows <= 0) return ok_status();
  if (experts.n_pairs > 65535) return Status::errorf("CUDA selected experts: {} pairs (at most 65535)", experts.n_pairs);
  const dim3 grid(static_cast<unsigned>(ceil_div(shape.rows, kWarpsPerBlock)), static_cast<unsigned>(experts.n_pairs));
  return with_weight_type(shape.dtype, [&](auto type) {
    return launch("selected experts", selected_matvec_kernel<decltype(type)::value, kGlu>, grid,
                  dim3(32 * kWarpsPerBlock), context.impl().stream, tables, experts.selected, shape.row_bytes(),
                  shape.rows, shape.cols, input, input_share, glu, output);
  });
}

}  // namespace

Status selected_gate_up(Context& context, const SelectedExperts& experts, const float* input,
                        const GluArgs& glu, float* activated) {
  MOENAV_RETURN_IF_ERROR(check_gate_up(experts.tables, "selected"));
  return launch_selected<true>(context, experts.tables.gate, gate_up_tables(experts.tables), experts, input,
                               experts.k, glu, activated);
}

Status selected_down(Context& context, const SelectedExperts& experts, const float* activated, float* output) {
  MOENAV_RETURN_IF_ERROR(check_chunked_rows(experts.tables.down, "selected", "down"));
  return launch_selected<false>(context, experts.tables.down, down_tables(experts.tables), experts, activated, 1,
                                GluArgs{}, output);
}

Status combine_slots(Context& context, const float* pair_output, const float* weights, int64_t n_tokens,
                     int64_t k, int64_t width, float* output, const int32_t* pair_rows) {
  if (n_tokens <= 0) return ok_status();
  return launch("combine slots", combine_slots_kernel, static_cast<unsigned>(n_tokens), 256, context.impl().stream,
                pair_output, weights, k, width, pair_rows, output);
}

}  // namespace moenav::cuda
