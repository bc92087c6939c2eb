// The routed experts of decode steps whose routing was chosen on the device: every (token, slot)
// pair in one launch per projection, each pair reading its expert's matrices through a device
// table (no trip to the host for the selection), then a combine in the CPU's slot order.
//
// A block per (few weight rows, pair) dots the rows with the pair's input (block_dot), as
// matmul's matvec does; two gate and two up rows of a pair share the block, which applies the
// activation, so the FFN's first half is one kernel.
#include "backend/cuda/block_dot.h"
#include "backend/cuda/cuda_internal.h"
#include "backend/cuda_ops.h"

namespace moenav::cuda {
namespace {

template <bool kGlu>
constexpr int kBlockRowsOf = kGlu ? 2 : 4;  // weight rows of one matrix a block takes

// output[pair, row] = first[e] row . x + bias, or act(first[e] row . x + bias, second[e] row . x +
// bias) with kGlu; e = selected[pair], x = input + (pair / input_share) * cols. A block takes
// kBlockRowsOf<kGlu> rows: four of one matrix, or two of each with kGlu.
template <DType kType, bool kGlu>
__global__ void selected_matvec_kernel(ProjectionTables tables, const int32_t* selected, int64_t row_bytes,
                                       int64_t rows, int64_t cols, const float* input, int64_t input_share,
                                       GluArgs glu, float* output) {
  constexpr int kStreams = 4, kBlockRows = kBlockRowsOf<kGlu>;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kBlockRows;
  const int64_t pair = blockIdx.y;
  const int32_t expert = selected[pair];
  const float* x = input + (pair / input_share) * cols;
  const uint8_t* row_data[kStreams];
#pragma unroll
  for (int r = 0; r < kStreams; ++r) {
    const void* matrix = !kGlu || r < kBlockRows ? tables.first[expert] : tables.second[expert];
    row_data[r] = static_cast<const uint8_t*>(matrix) + min(first + r % kBlockRows, rows - 1) * row_bytes;
  }
  const float* totals = block_dot<kType, kStreams, 1>(row_data, cols, x, 1);
  const int i = static_cast<int>(threadIdx.x);
  const int64_t row = first + i;
  if (i >= kBlockRows || row >= rows) return;
  float value = totals[i] + bias_of(tables.first_bias, expert, row);
  if constexpr (kGlu) {
    value = glu_activate(value, totals[kBlockRows + i] + bias_of(tables.second_bias, expert, row), glu);
  }
  output[pair * rows + row] = value;
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
  const dim3 grid(static_cast<unsigned>(ceil_div(shape.rows, kBlockRowsOf<kGlu>)),
                  static_cast<unsigned>(experts.n_pairs));
  return with_weight_type(shape.dtype, [&](auto type) {
    return launch("selected experts", selected_matvec_kernel<decltype(type)::value, kGlu>, grid,
                  dim3(kDotThreads), context.impl().stream, tables, experts.selected, shape.row_bytes(),
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
