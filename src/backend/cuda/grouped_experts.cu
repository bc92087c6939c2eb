// Prefill's routed experts as grouped GEMMs: the (token, slot) pairs sorted by expert, every
// expert's rows a group, all groups of a layer in one launch per projection.
//
// A block computes a tile of kGroupedTileRows pair rows of one group by kTileCols weight rows.
// Its K loop takes one chunk of 32 columns at a time: each thread dequantizes one weight row's
// chunk (dequantize_chunk, the block formats of quant/blocks.h) into shared memory as bf16, the
// pair rows' bf16 chunk is copied beside it, and each of the four warps multiplies its 32 x 32
// quarter on tensor cores (wmma 16x16x16, f32 accumulation). The weights are read once per
// row tile of their group, in their stored format: nothing is dequantized to memory, which is
// what the per-expert path (dequantize a slice to scratch, then cuBLAS) spends most bytes on.
// The gate and up projections share the block, which applies the activation before its store.
#include <mma.h>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/dequantize_chunk.h"
#include "backend/cuda_ops.h"

namespace moenav::cuda {
namespace {

using namespace nvcuda;

constexpr int kTileRows = static_cast<int>(kGroupedTileRows);
constexpr int kTileCols = 64;
constexpr int kThreads = 128;            // four warps, warp w at rows 32 (w / 2), columns 32 (w % 2)
constexpr int kStride = kChunk + 8;      // bf16 row stride of the input tiles (wmma: a multiple of 8)
constexpr int kOutStride = kTileCols + 4;  // float row stride of the output tiles

// The block's shared memory: the K step's input tiles, then (once the loop is done) the products.
template <int kMatrices>
union alignas(128) Tiles {
  struct {
    __nv_bfloat16 x[kTileRows * kStride];               // pair rows x chunk
    __nv_bfloat16 w[kMatrices][kTileCols * kStride];    // weight rows x chunk, per matrix
  } in;
  float out[kMatrices][kTileRows * kOutStride];
};

// Row tile `tile` of the groups in order: its group and its rows [begin, end); group -1 past the last.
struct RowTile {
  int64_t group = -1, begin = 0, end = 0;
};
__device__ inline RowTile find_row_tile(const int32_t* group_first, int64_t n_groups, int64_t tile) {
  for (int64_t g = 0; g < n_groups; ++g) {
    const int64_t first = group_first[g], count = group_first[g + 1] - first;
    const int64_t tiles = (count + kTileRows - 1) / kTileRows;
    if (tile < tiles) {
      const int64_t begin = first + tile * kTileRows;
      return RowTile{g, begin, min(begin + kTileRows, first + count)};
    }
    tile -= tiles;
  }
  return RowTile{};
}

// output[p, n] for the pairs p of row tile blockIdx.y and the weight rows n of column tile
// blockIdx.x: first[e] row n . input[p] + bias, or with kGlu act(first[e] row n . x + bias,
// second[e] row n . x + bias) as bf16; e = the group's expert. input: bf16 [pairs, cols].
template <DType kType, bool kGlu>
__global__ void grouped_kernel(ProjectionTables tables, const int32_t* group_experts, const int32_t* group_first,
                               int64_t n_groups, int64_t row_bytes, int64_t rows, int64_t cols,
                               const __nv_bfloat16* input, GluArgs glu, void* output) {
  constexpr int kMatrices = kGlu ? 2 : 1;
  __shared__ Tiles<kMatrices> tiles;
  const RowTile tile = find_row_tile(group_first, n_groups, blockIdx.y);
  if (tile.group < 0) return;  // the whole block leaves
  const int32_t expert = group_experts[tile.group];
  const auto* first = static_cast<const uint8_t*>(tables.first[expert]);
  const auto* second = kGlu ? static_cast<const uint8_t*>(tables.second[expert]) : first;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTileCols;
  const int thread = static_cast<int>(threadIdx.x), warp = thread / 32;
  const int warp_row = 32 * (warp / 2), warp_col = 32 * (warp % 2);

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kMatrices][2][2];
  for (int m = 0; m < kMatrices; ++m)
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[m][i][j], 0.0f);

  for (int64_t chunk = 0; chunk < cols / kChunk; ++chunk) {
    if (thread < kMatrices * kTileCols) {  // one weight row's chunk per thread
      const int m = thread / kTileCols, r = thread % kTileCols;
      float w[kChunk];
      if (n0 + r < rows) {
        dequantize_chunk<kType>((m == 0 ? first : second) + (n0 + r) * row_bytes, chunk, w);
      } else {
        for (float& v : w) v = 0.0f;
      }
      uint4* to = reinterpret_cast<uint4*>(tiles.in.w[m] + r * kStride);
#pragma unroll
      for (int i = 0; i < kChunk / 8; ++i) to[i] = pack_bf16x8(w + 8 * i);
    }
    {  // half a pair row's chunk (16 bf16, two 16-byte words) per thread
      const int r = thread / 2, half = thread % 2;
      uint4* to = reinterpret_cast<uint4*>(tiles.in.x + r * kStride + 16 * half);
      if (tile.begin + r < tile.end) {
        const uint4* from = reinterpret_cast<const uint4*>(input + (tile.begin + r) * cols + chunk * kChunk + 16 * half);
        to[0] = from[0], to[1] = from[1];
      } else {
        to[0] = uint4{}, to[1] = uint4{};
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kChunk; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a[2];
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], tiles.in.x + (warp_row + 16 * i) * kStride + kk, kStride);
      for (int m = 0; m < kMatrices; ++m) {
        for (int j = 0; j < 2; ++j) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
          wmma::load_matrix_sync(b, tiles.in.w[m] + (warp_col + 16 * j) * kStride + kk, kStride);
          for (int i = 0; i < 2; ++i) wmma::mma_sync(acc[m][i][j], a[i], b, acc[m][i][j]);
        }
      }
    }
    __syncthreads();  // the next chunk (or the products) overwrites the tiles
  }

  for (int m = 0; m < kMatrices; ++m)
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j)
        wmma::store_matrix_sync(tiles.out[m] + (warp_row + 16 * i) * kOutStride + warp_col + 16 * j, acc[m][i][j],
                                kOutStride, wmma::mem_row_major);
  __syncthreads();
  for (int index = thread; index < kTileRows * kTileCols; index += kThreads) {
    const int r = index / kTileCols, c = index % kTileCols;
    if (tile.begin + r >= tile.end || n0 + c >= rows) continue;
    const int64_t at = (tile.begin + r) * rows + n0 + c;
    const float value = tiles.out[0][r * kOutStride + c] + bias_of(tables.first_bias, expert, n0 + c);
    if constexpr (kGlu) {
      const float up = tiles.out[1][r * kOutStride + c] + bias_of(tables.second_bias, expert, n0 + c);
      static_cast<__nv_bfloat16*>(output)[at] = __float2bfloat16_rn(glu_activate(value, up, glu));
    } else {
      static_cast<float*>(output)[at] = value;
    }
  }
}

// dst[i, :] = bf16(src[rows[i], :]), one block per row.
__global__ void gather_bf16_kernel(const float* src, int64_t cols, const int32_t* rows, __nv_bfloat16* dst) {
  const int64_t i = blockIdx.x;
  const float* from = src + static_cast<int64_t>(rows[i]) * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dst[i * cols + c] = __float2bfloat16_rn(from[c]);
}

template <bool kGlu>
Status launch_grouped(Context& context, const DeviceWeight& shape, const ProjectionTables& tables,
                      const GroupedExperts& experts, const uint16_t* input, const GluArgs& glu, void* output) {
  if (experts.n_row_tiles <= 0 || shape.rows <= 0) return ok_status();
  if (experts.n_row_tiles > 65535) {
    return Status::errorf("CUDA grouped experts: {} row tiles (at most 65535)", experts.n_row_tiles);
  }
  const dim3 grid(static_cast<unsigned>(ceil_div(shape.rows, kTileCols)), static_cast<unsigned>(experts.n_row_tiles));
  return with_weight_type(shape.dtype, [&](auto type) {
    return launch("grouped experts", grouped_kernel<decltype(type)::value, kGlu>, grid, dim3(kThreads),
                  context.impl().stream, tables, experts.group_experts, experts.group_first, experts.n_groups,
                  shape.row_bytes(), shape.rows, shape.cols, reinterpret_cast<const __nv_bfloat16*>(input), glu,
                  output);
  });
}

}  // namespace

int64_t grouped_row_tiles(int64_t group_rows) { return ceil_div(group_rows, kTileRows); }

Status grouped_gate_up(Context& context, const GroupedExperts& experts, const uint16_t* input,
                       const GluArgs& glu, uint16_t* activated) {
  MOENAV_RETURN_IF_ERROR(check_gate_up(experts.tables, "grouped"));
  return launch_grouped<true>(context, experts.tables.gate, gate_up_tables(experts.tables), experts, input, glu,
                              activated);
}

Status grouped_down(Context& context, const GroupedExperts& experts, const uint16_t* activated, float* output) {
  MOENAV_RETURN_IF_ERROR(check_chunked_rows(experts.tables.down, "grouped", "down"));
  return launch_grouped<false>(context, experts.tables.down, down_tables(experts.tables), experts, activated,
                               GluArgs{}, output);
}

Status gather_rows_bf16(Context& context, const float* src, int64_t cols, const int32_t* rows, int64_t n,
                        uint16_t* dst) {
  if (n <= 0) return ok_status();
  if (n > 0x7fffffff) return Status::errorf("CUDA gather_rows_bf16: {} rows", n);
  return launch("gather_rows_bf16", gather_bf16_kernel, static_cast<unsigned>(n), 256, context.impl().stream, src,
                cols, rows, reinterpret_cast<__nv_bfloat16*>(dst));
}

}  // namespace moenav::cuda
