// Quantized matrix products on the GPU. Every weight type is read in chunks of 32 consecutive
// elements of a row (a Q8_0/Q4_0 block, an eighth of a k-quant super-block, 32 plain values),
// dequantized to f32 in registers with the block formats of quant/blocks.h.
//
// Plain rows of a width that is not whole chunks take a simpler warp-per-(row, token) kernel.
//
// Decode (T <= kMatvecMaxTokens): a block of 128 threads per 4 weight rows (block_dot), each
// chunk dequantized once and dotted with all T token rows; the bound is the weight bytes over
// HBM bandwidth. Prefill: the weight is dequantized slice by slice into scratch (bf16, or
// f32 at GemmPrecision::F32) and multiplied with cuBLAS, f32 accumulation.
#include <algorithm>
#include <type_traits>

#include "backend/cuda/block_dot.h"
#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/dequantize_chunk.h"
#include "backend/cuda_ops.h"

namespace moenav::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;  // the ragged kernel's
constexpr int kMatvecRows = 4;     // weight rows a matvec block takes
constexpr int64_t kSliceBytes = int64_t{64} << 20;  // dequantized weight per GEMM slice

// Up to kMaxMatmulParts weights of one type and width multiplied by the same input in one
// launch: part p's blocks are [first_block[p], first_block[p + 1]).
struct MatvecParts {
  const uint8_t* weight[kMaxMatmulParts] = {};
  float* output[kMaxMatmulParts] = {};
  int64_t rows[kMaxMatmulParts] = {};
  int64_t first_block[kMaxMatmulParts + 1] = {};
};

// Rows [kMatvecRows * b, + kMatvecRows) of a part's output[t, row] = weight row . input[t], b
// the block's index within its part.
template <DType kType, int kTokens>
__global__ void matvec_kernel(MatvecParts parts, int64_t row_bytes, int64_t cols, const float* input,
                              int n_tokens) {
  // The block's part, by constant indices only (a dynamic one would copy `parts` to local memory).
  const uint8_t* weight = parts.weight[0];
  float* output = parts.output[0];
  int64_t rows = parts.rows[0], first_block = 0;
#pragma unroll
  for (size_t p = 1; p < kMaxMatmulParts; ++p) {
    if (blockIdx.x >= parts.first_block[p]) {
      weight = parts.weight[p], output = parts.output[p], rows = parts.rows[p], first_block = parts.first_block[p];
    }
  }
  const int64_t first = (blockIdx.x - first_block) * kMatvecRows;
  const uint8_t* row_data[kMatvecRows];
#pragma unroll
  for (int r = 0; r < kMatvecRows; ++r) row_data[r] = weight + min(first + r, rows - 1) * row_bytes;
  const float* totals = block_dot<kType, kMatvecRows, kTokens>(row_data, cols, input, n_tokens);
  const int i = static_cast<int>(threadIdx.x);
  const int64_t row = first + i / kTokens;
  const int t = i % kTokens;
  if (i < kMatvecRows * kTokens && row < rows && t < n_tokens) output[t * rows + row] = totals[i];
}

// Plain (f32, f16, bf16) rows whose width is not whole chunks (MLA's per-head matrices of small
// models): one warp per (row, token), lane i takes elements i, i + 32, ...
template <DType kType>
__global__ void ragged_matvec_kernel(const uint8_t* weight, int64_t rows, int64_t cols,
                                     const float* input, int64_t n_tokens, float* output) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;
  for (int64_t t = blockIdx.y; t < n_tokens; t += gridDim.y) {
    float sum = 0.0f;
    for (int64_t i = lane; i < cols; i += 32) {
      float w;
      if constexpr (kType == DType::F32) {
        w = reinterpret_cast<const float*>(weight)[row * cols + i];
      } else {
        const uint16_t bits = reinterpret_cast<const uint16_t*>(weight)[row * cols + i];
        w = kType == DType::F16 ? half_bits_to_float(bits) : bf16_bits_to_float(bits);
      }
      sum += w * input[t * cols + i];
    }
    sum = warp_sum(sum);
    if (lane == 0) output[t * rows + row] = sum;
  }
}

constexpr bool is_plain(DType type) { return type == DType::F32 || type == DType::F16 || type == DType::BF16; }

// out[r, :] for rows [0, n_rows) of `weight`, as Out (float or bf16); one thread per quarter
// chunk, consecutive threads writing consecutive 16 or 32 bytes.
template <DType kType, typename Out>
__global__ void dequantize_kernel(const uint8_t* weight, int64_t row_bytes, int64_t n_rows,
                                  int64_t cols, Out* out) {
  const int64_t quarters_per_row = cols / kChunk * 4;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= n_rows * quarters_per_row) return;
  const int64_t row = index / quarters_per_row, quarter = index % quarters_per_row;
  float w[8];
  dequantize_quarter<kType>(weight + row * row_bytes, quarter / 4, static_cast<int>(quarter % 4), w);
  Out* y = out + row * cols + quarter * 8;
  if constexpr (std::is_same_v<Out, float>) {
    reinterpret_cast<float4*>(y)[0] = float4{w[0], w[1], w[2], w[3]};
    reinterpret_cast<float4*>(y)[1] = float4{w[4], w[5], w[6], w[7]};
  } else {
    *reinterpret_cast<uint4*>(y) = pack_bf16x8(w);
  }
}

__global__ void to_bf16_kernel(const float* in, __nv_bfloat16* out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(in[i]);
}

// The parts share the first's type and width (matmul_parts checks).
template <DType kType>
Status launch_matvec(Context& context, const MatmulPart* parts, size_t n_parts, const float* input,
                     int64_t n_tokens) {
  cudaStream_t stream = context.impl().stream;
  const DeviceWeight& shape = parts[0].weight;
  if constexpr (is_plain(kType)) {
    if (shape.cols % kChunk != 0) {  // one part (matmul_parts runs ragged rows one by one)
      if (shape.rows <= 0) return ok_status();
      const dim3 ragged_grid(static_cast<unsigned>(ceil_div(shape.rows, kWarpsPerBlock)),
                             static_cast<unsigned>(std::min<int64_t>(n_tokens, 65535)));
      return launch("ragged matvec", ragged_matvec_kernel<kType>, ragged_grid,
                    dim3(32 * kWarpsPerBlock), stream, static_cast<const uint8_t*>(shape.data),
                    shape.rows, shape.cols, input, n_tokens, parts[0].output);
    }
  }
  MatvecParts args;
  size_t n = 0;
  for (size_t p = 0; p < n_parts; ++p) {
    const DeviceWeight& weight = parts[p].weight;
    if (weight.rows <= 0) continue;
    args.weight[n] = static_cast<const uint8_t*>(weight.data);
    args.output[n] = parts[p].output;
    args.rows[n] = weight.rows;
    args.first_block[n + 1] = args.first_block[n] + ceil_div(weight.rows, kMatvecRows);
    ++n;
  }
  if (n == 0) return ok_status();
  for (size_t p = n; p < kMaxMatmulParts; ++p) args.first_block[p + 1] = args.first_block[p];
  const int tokens = static_cast<int>(n_tokens);
  const dim3 grid(static_cast<unsigned>(args.first_block[kMaxMatmulParts]));
  auto run = [&](auto kernel) {
    return launch("matvec", kernel, grid, dim3(kDotThreads), stream, args, shape.row_bytes(), shape.cols, input,
                  tokens);
  };
  if (n_tokens == 1) return run(matvec_kernel<kType, 1>);
  if (n_tokens == 2) return run(matvec_kernel<kType, 2>);
  if (n_tokens <= 4) return run(matvec_kernel<kType, 4>);
  return run(matvec_kernel<kType, 8>);
}

template <DType kType>
Status launch_gemm(Context& context, const DeviceWeight& weight, const float* input,
                   int64_t n_tokens, float* output) {
  Context::Impl& state = context.impl();
  const bool bf16 = state.gemm_precision == GemmPrecision::Bf16;
  const int64_t element_bytes = bf16 ? 2 : 4;
  const bool in_place = !bf16 && kType == DType::F32;  // f32 weights multiply as stored
  const int64_t slice_rows =
      in_place ? weight.rows
               : std::clamp<int64_t>(kSliceBytes / (weight.cols * element_bytes), 1, weight.rows);
  const int64_t weight_scratch = in_place ? 0 : slice_rows * weight.cols * element_bytes;
  const int64_t input_scratch = bf16 ? n_tokens * weight.cols * element_bytes : 0;
  MOENAV_ASSIGN_OR_RETURN(void* area, scratch(context, weight_scratch + input_scratch));
  void* slice = area;
  const void* gemm_input = input;
  if (bf16) {
    auto* converted = reinterpret_cast<__nv_bfloat16*>(static_cast<char*>(area) + weight_scratch);
    const int64_t n = n_tokens * weight.cols;
    MOENAV_RETURN_IF_ERROR(launch("bf16 conversion", to_bf16_kernel,
                                  static_cast<unsigned>(ceil_div(n, 256)), 256, state.stream,
                                  input, converted, n));
    gemm_input = converted;
  }
  const cudaDataType type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const float alpha = 1.0f, beta = 0.0f;
  const auto* data = static_cast<const uint8_t*>(weight.data);
  for (int64_t first = 0; first < weight.rows; first += slice_rows) {
    const int64_t n_rows = std::min(slice_rows, weight.rows - first);
    const void* a = data + first * weight.row_bytes();
    if (!in_place) {
      const int64_t threads = n_rows * (weight.cols / kChunk) * 4;
      const unsigned blocks = static_cast<unsigned>(ceil_div(threads, 256));
      const uint8_t* rows = data + first * weight.row_bytes();
      MOENAV_RETURN_IF_ERROR(
          bf16 ? launch("dequantize", dequantize_kernel<kType, __nv_bfloat16>, blocks, 256,
                        state.stream, rows, weight.row_bytes(), n_rows, weight.cols,
                        static_cast<__nv_bfloat16*>(slice))
               : launch("dequantize", dequantize_kernel<kType, float>, blocks, 256, state.stream,
                        rows, weight.row_bytes(), n_rows, weight.cols, static_cast<float*>(slice)));
      a = slice;
    }
    // Column-major view: output^T [N, T] = weight [K, N]^T * input^T [K, T].
    MOENAV_RETURN_IF_ERROR(cublas_status(
        cublasGemmEx(state.blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n_rows),
                     static_cast<int>(n_tokens), static_cast<int>(weight.cols), &alpha, a, type,
                     static_cast<int>(weight.cols), gemm_input, type,
                     static_cast<int>(weight.cols), &beta, output + first, CUDA_R_32F,
                     static_cast<int>(weight.rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "GEMM"));
  }
  return ok_status();
}

Status check_weight(const DeviceWeight& weight) {
  if (!matmul_supported(weight.dtype)) {
    return Status::errorf("CUDA matmul: weight type {} is not supported", dtype_name(weight.dtype));
  }
  if ((weight.cols % kChunk != 0 && !is_plain(weight.dtype)) || !row_size_valid(weight.dtype, weight.cols)) {
    return Status::errorf("CUDA matmul: a {} row of {} elements is not whole blocks of 32",
                          dtype_name(weight.dtype), weight.cols);
  }
  return ok_status();
}

}  // namespace

Status matmul(Context& context, const DeviceWeight& weight, const float* input, int64_t n_tokens,
              float* output) {
  const MatmulPart part{weight, output};
  return matmul_parts(context, &part, 1, input, n_tokens);
}

Status matmul_parts(Context& context, const MatmulPart* parts, size_t n_parts, const float* input,
                    int64_t n_tokens) {
  if (n_parts == 0) return ok_status();
  if (n_parts > kMaxMatmulParts) {
    return Status::errorf("CUDA matmul: {} parts in one launch (at most {})", n_parts, kMaxMatmulParts);
  }
  const DeviceWeight& first = parts[0].weight;
  const MatmulPart* end = parts + n_parts;
  for (const MatmulPart* part = parts; part != end; ++part) MOENAV_RETURN_IF_ERROR(check_weight(part->weight));
  if (n_tokens <= 0) return ok_status();
  const bool ragged = first.cols % kChunk != 0;  // plain rows only (check_weight)
  const bool one_launch = n_tokens <= kMatvecMaxTokens && !ragged &&
                          std::all_of(parts, end, [&](const MatmulPart& part) {
                            return part.weight.dtype == first.dtype && part.weight.cols == first.cols;
                          });
  if (!one_launch) {  // prefill's GEMMs, ragged rows, or parts that differ: one by one
    for (const MatmulPart* part = parts; part != end; ++part) {
      if (part->weight.rows <= 0) continue;
      MOENAV_RETURN_IF_ERROR(with_weight_type(part->weight.dtype, [&](auto type) {
        constexpr DType kType = decltype(type)::value;
        return n_tokens <= kMatvecMaxTokens || part->weight.cols % kChunk != 0
                   ? launch_matvec<kType>(context, part, 1, input, n_tokens)
                   : launch_gemm<kType>(context, part->weight, input, n_tokens, part->output);
      }));
    }
    return ok_status();
  }
  return with_weight_type(first.dtype, [&](auto type) {
    return launch_matvec<decltype(type)::value>(context, parts, n_parts, input, n_tokens);
  });
}

}  // namespace moenav::cuda
