// Quantized matrix products on the GPU. Every weight type is read in chunks of 32 consecutive
// elements of a row (a Q8_0/Q4_0 block, an eighth of a k-quant super-block, 32 plain values),
// dequantized to f32 in registers with the block formats of quant/blocks.h.
//
// Plain rows of a width that is not whole chunks take a simpler warp-per-(row, token) kernel.
//
// Decode (T <= kMatvecMaxTokens): one warp per weight row, lane i takes chunks i, i + 32, ...,
// each chunk is dequantized once and dotted with all T token rows; the bound is the weight bytes
// over HBM bandwidth. Prefill: the weight is dequantized slice by slice into scratch (bf16, or
// f32 at GemmPrecision::F32) and multiplied with cuBLAS, f32 accumulation.
#include <algorithm>
#include <type_traits>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/dequantize_chunk.h"
#include "backend/cuda_ops.h"

namespace moenav::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int64_t kSliceBytes = int64_t{64} << 20;  // dequantized weight per GEMM slice

template <DType kType, int kTokens>
__global__ void matvec_kernel(const uint8_t* weight, int64_t row_bytes, int64_t rows,
                              int64_t cols, const float* input, int n_tokens, float* output) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;  // whole warps leave together
  const uint8_t* weight_row = weight + row * row_bytes;
  float acc[kTokens] = {};
  float w[kChunk];
  for (int64_t chunk = lane; chunk < cols / kChunk; chunk += 32) {
    dequantize_chunk<kType>(weight_row, chunk, w);
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (t >= n_tokens) break;
      const float4* x = reinterpret_cast<const float4*>(input + t * cols + chunk * kChunk);
      float sum = 0.0f;
#pragma unroll
      for (int i = 0; i < kChunk / 4; ++i) {
        const float4 v = __ldg(x + i);
        sum += w[4 * i] * v.x + w[4 * i + 1] * v.y + w[4 * i + 2] * v.z + w[4 * i + 3] * v.w;
      }
      acc[t] += sum;
    }
  }
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    const float total = warp_sum(acc[t]);
    if (lane == 0 && t < n_tokens) output[t * rows + row] = total;
  }
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

// out[r, :] for rows [0, n_rows) of `weight`, as Out (float or bf16); one thread per chunk.
template <DType kType, typename Out>
__global__ void dequantize_kernel(const uint8_t* weight, int64_t row_bytes, int64_t n_rows,
                                  int64_t cols, Out* out) {
  const int64_t chunks_per_row = cols / kChunk;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= n_rows * chunks_per_row) return;
  const int64_t row = index / chunks_per_row, chunk = index % chunks_per_row;
  float w[kChunk];
  dequantize_chunk<kType>(weight + row * row_bytes, chunk, w);
  Out* y = out + row * cols + chunk * kChunk;
#pragma unroll
  for (int i = 0; i < kChunk; ++i) {
    if constexpr (std::is_same_v<Out, float>) {
      y[i] = w[i];
    } else {
      y[i] = __float2bfloat16_rn(w[i]);
    }
  }
}

__global__ void to_bf16_kernel(const float* in, __nv_bfloat16* out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(in[i]);
}

template <DType kType>
Status launch_matvec(Context& context, const DeviceWeight& weight, const float* input,
                     int64_t n_tokens, float* output) {
  const dim3 grid(static_cast<unsigned>(ceil_div(weight.rows, kWarpsPerBlock)));
  const dim3 block(32 * kWarpsPerBlock);
  cudaStream_t stream = context.impl().stream;
  const auto* data = static_cast<const uint8_t*>(weight.data);
  if constexpr (is_plain(kType)) {
    if (weight.cols % kChunk != 0) {
      const dim3 ragged_grid(grid.x, static_cast<unsigned>(std::min<int64_t>(n_tokens, 65535)));
      return launch("ragged matvec", ragged_matvec_kernel<kType>, ragged_grid, block, stream, data,
                    weight.rows, weight.cols, input, n_tokens, output);
    }
  }
  const int tokens = static_cast<int>(n_tokens);
  auto run = [&](auto kernel) {
    return launch("matvec", kernel, grid, block, stream, data, weight.row_bytes(),
                  weight.rows, weight.cols, input, tokens, output);
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
      const int64_t threads = n_rows * (weight.cols / kChunk);
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

template <DType kType>
Status dispatch(Context& context, const DeviceWeight& weight, const float* input,
                int64_t n_tokens, float* output) {
  const bool ragged = weight.cols % kChunk != 0;  // plain rows only (check_weight)
  return n_tokens <= kMatvecMaxTokens || ragged
             ? launch_matvec<kType>(context, weight, input, n_tokens, output)
             : launch_gemm<kType>(context, weight, input, n_tokens, output);
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
  MOENAV_RETURN_IF_ERROR(check_weight(weight));
  if (n_tokens <= 0 || weight.rows <= 0) return ok_status();
  return with_weight_type(weight.dtype, [&](auto type) {
    return dispatch<decltype(type)::value>(context, weight, input, n_tokens, output);
  });
}

}  // namespace moenav::cuda
