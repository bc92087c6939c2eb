// The small ops of the CUDA backend: RMSNorm, RoPE, the FFN activations, biases, residual and
// gated adds, K/V cache stores, column copies, and the row gather and weighted scatter of
// mixture-of-experts dispatch. Each mirrors its CPU reference
// (layers/norm.cpp, layers/rope.cpp, layers/ffn.cpp) operation for operation in f32.
#include "backend/cuda/cuda_internal.h"
#include "backend/cuda_ops.h"

namespace moenav::cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) { return static_cast<unsigned>(ceil_div(n, kThreads)); }

// One block per row: the sum of squares reduced through shared memory, then the scaled row.
// One block per row. With a residual, the row is input + residual, stored to `sum` first.
__global__ void rms_norm_kernel(const float* input, const float* residual, float* sum_out, const float* weight,
                                float* output, int64_t dim, float eps) {
  const int64_t offset = static_cast<int64_t>(blockIdx.x) * dim;
  const float* x = input + offset;
  float* y = output + offset;
  float sum = 0.0f;
  if (residual != nullptr) {  // each thread reads back only the elements it stored
    float* stored = sum_out + offset;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const float v = x[i] + residual[offset + i];
      stored[i] = v;
      sum += v * v;
    }
    x = stored;
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum += x[i] * x[i];
  }
  __shared__ float partial[kThreads / 32];
  sum = warp_sum(sum);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x < 32) {
    sum = threadIdx.x < kThreads / 32 ? partial[threadIdx.x] : 0.0f;
    sum = warp_sum(sum);
    if (threadIdx.x == 0) partial[0] = sum;
  }
  __syncthreads();
  const float scale = 1.0f / sqrtf(partial[0] / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) y[i] = x[i] * scale * weight[i];
}

// One thread per (token, head, pair).
__global__ void rope_kernel(RopeArgs args) {
  const int64_t half = args.rotary_dim / 2;
  int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  float* x = args.x;
  int64_t n_heads = args.n_heads, token_stride = args.token_stride;
  if (index >= args.n_tokens * n_heads * half) {  // the keys' pairs follow the queries'
    index -= args.n_tokens * n_heads * half;
    x = args.keys, n_heads = args.n_key_heads, token_stride = args.key_token_stride;
    if (index >= args.n_tokens * n_heads * half) return;
  }
  const int64_t i = index % half;
  const int64_t head = (index / half) % n_heads;
  const int64_t token = index / (half * n_heads);
  const float angle = static_cast<float>(args.positions[token]) * args.inverse_frequency[i];
  const float cosine = cosf(angle) * args.attention_factor;
  const float sine = sinf(angle) * args.attention_factor;
  float* h = x + token * token_stride + head * args.head_stride;
  const int64_t first = args.neox ? i : 2 * i;
  const int64_t second = args.neox ? i + half : 2 * i + 1;
  const float a = h[first], b = h[second];
  h[first] = a * cosine - b * sine;
  h[second] = b * cosine + a * sine;
}

__global__ void silu_mul_kernel(const float* gate, const float* up, float* output, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) output[i] = glu_activate(gate[i], up[i], GluArgs{});
}

__global__ void clamped_swiglu_kernel(const float* gate, const float* up, float* output,
                                      int64_t n, float alpha, float limit) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) output[i] = glu_activate(gate[i], up[i], GluArgs{true, alpha, limit});
}

__global__ void add_bias_kernel(float* rows, const float* bias, int64_t width, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) rows[i] += bias[i % width];
}

__global__ void add_gated_kernel(float* output, const float* addend, const float* gate_logits,
                                 int64_t width, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float scale = 1.0f / (1.0f + expf(-gate_logits[i / width]));
  output[i] += scale * addend[i];
}

__global__ void copy_columns_kernel(const float* source, int64_t source_stride, float* destination,
                                    int64_t destination_stride, int64_t width, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t row = i / width, column = i % width;
  destination[row * destination_stride + column] = source[row * source_stride + column];
}

__device__ inline void store_element(float x, float* to) { *to = x; }
__device__ inline void store_element(float x, __half* to) {
  constexpr float kHalfMax = 65504.0f;  // beyond it a key would become inf, and a row NaN
  *to = __float2half_rn(x < -kHalfMax ? -kHalfMax : (x > kHalfMax ? kHalfMax : x));
}

// blockIdx.y 0: the keys, 1: the values.
template <typename T>
__global__ void store_kv_kernel(const float* keys, T* key_cache, const float* values, T* value_cache,
                                int64_t width, const int32_t* positions, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float* source = blockIdx.y == 0 ? keys : values;
  T* cache = blockIdx.y == 0 ? key_cache : value_cache;
  const int64_t row = i / width;
  store_element(source[i], cache + static_cast<int64_t>(positions[row]) * width + i % width);
}

__global__ void add_kernel(const float* a, const float* b, float* output, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) output[i] = a[i] + b[i];
}

// One block per gathered row.
__global__ void gather_kernel(const float* src, int64_t cols, const int32_t* rows, float* dst) {
  const float* from = src + static_cast<int64_t>(rows[blockIdx.x]) * cols;
  float* to = dst + static_cast<int64_t>(blockIdx.x) * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) to[c] = from[c];
}

__global__ void scatter_add_kernel(const float* src, int64_t cols, const int32_t* rows,
                                   const float* weights, float* dst) {
  const float* from = src + static_cast<int64_t>(blockIdx.x) * cols;
  float* to = dst + static_cast<int64_t>(rows[blockIdx.x]) * cols;
  const float weight = weights[blockIdx.x];
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) to[c] += weight * from[c];
}

}  // namespace

Status rms_norm(Context& context, const float* input, const float* weight, float* output,
                int64_t n_rows, int64_t dim, float eps) {
  if (n_rows <= 0) return ok_status();
  return launch("rms_norm", rms_norm_kernel, static_cast<unsigned>(n_rows), kThreads,
                context.impl().stream, input, nullptr, nullptr, weight, output, dim, eps);
}

Status add_rms_norm(Context& context, float* hidden, const float* residual, const float* weight,
                    float* output, int64_t n_rows, int64_t dim, float eps) {
  if (n_rows <= 0) return ok_status();
  return launch("add_rms_norm", rms_norm_kernel, static_cast<unsigned>(n_rows), kThreads,
                context.impl().stream, hidden, residual, hidden, weight, output, dim, eps);
}

Status rope(Context& context, const RopeArgs& args) {
  if (args.rotary_dim % 2 != 0) {
    return Status::errorf("CUDA rope: rotary dim {} is odd", args.rotary_dim);
  }
  const int64_t key_heads = args.keys == nullptr ? 0 : args.n_key_heads;
  const int64_t n = args.n_tokens * (args.n_heads + key_heads) * (args.rotary_dim / 2);
  if (n <= 0) return ok_status();
  return launch("rope", rope_kernel, blocks_for(n), kThreads, context.impl().stream, args);
}

Status silu_mul(Context& context, const float* gate, const float* up, float* output, int64_t n) {
  if (n <= 0) return ok_status();
  return launch("silu_mul", silu_mul_kernel, blocks_for(n), kThreads, context.impl().stream, gate,
                up, output, n);
}

Status clamped_swiglu(Context& context, const float* gate, const float* up, float* output,
                      int64_t n, float alpha, float limit) {
  if (n <= 0) return ok_status();
  return launch("clamped_swiglu", clamped_swiglu_kernel, blocks_for(n), kThreads, context.impl().stream,
                gate, up, output, n, alpha, limit);
}

Status add_bias(Context& context, float* rows, const float* bias, int64_t n_rows, int64_t width) {
  const int64_t n = n_rows * width;
  if (n <= 0 || bias == nullptr) return ok_status();
  return launch("add_bias", add_bias_kernel, blocks_for(n), kThreads, context.impl().stream, rows, bias,
                width, n);
}

Status add_gated(Context& context, float* output, const float* addend, const float* gate_logits,
                 int64_t n_rows, int64_t width) {
  const int64_t n = n_rows * width;
  if (n <= 0) return ok_status();
  return launch("add_gated", add_gated_kernel, blocks_for(n), kThreads, context.impl().stream, output,
                addend, gate_logits, width, n);
}

Status copy_columns(Context& context, const float* source, int64_t source_stride, float* destination,
                    int64_t destination_stride, int64_t n_rows, int64_t width) {
  const int64_t n = n_rows * width;
  if (n <= 0) return ok_status();
  return launch("copy_columns", copy_columns_kernel, blocks_for(n), kThreads, context.impl().stream,
                source, source_stride, destination, destination_stride, width, n);
}

Status store_kv(Context& context, const float* keys, void* key_cache, int64_t width,
                const int32_t* positions, int64_t n_rows, DType type, const float* values,
                void* value_cache) {
  if (type != DType::F32 && type != DType::F16) {
    return Status::errorf("CUDA store_kv: a {} KV cache (supported: f32, f16)", dtype_name(type));
  }
  const int64_t n = n_rows * width;
  if (n <= 0) return ok_status();
  const dim3 grid(blocks_for(n), values != nullptr && value_cache != nullptr ? 2 : 1);
  cudaStream_t stream = context.impl().stream;
  if (type == DType::F32) {
    return launch("store_kv", store_kv_kernel<float>, grid, kThreads, stream, keys, static_cast<float*>(key_cache),
                  values, static_cast<float*>(value_cache), width, positions, n);
  }
  return launch("store_kv", store_kv_kernel<__half>, grid, kThreads, stream, keys, static_cast<__half*>(key_cache),
                values, static_cast<__half*>(value_cache), width, positions, n);
}

Status add(Context& context, const float* a, const float* b, float* output, int64_t n) {
  if (n <= 0) return ok_status();
  return launch("add", add_kernel, blocks_for(n), kThreads, context.impl().stream, a, b, output, n);
}

Status gather_rows(Context& context, const float* src, int64_t cols, const int32_t* rows,
                   int64_t n, float* dst) {
  if (n <= 0) return ok_status();
  return launch("gather_rows", gather_kernel, static_cast<unsigned>(n), kThreads,
                context.impl().stream, src, cols, rows, dst);
}

Status scatter_add_rows(Context& context, const float* src, int64_t cols, const int32_t* rows,
                        const float* weights, int64_t n, float* dst) {
  if (n <= 0) return ok_status();
  return launch("scatter_add_rows", scatter_add_kernel, static_cast<unsigned>(n), kThreads,
                context.impl().stream, src, cols, rows, weights, dst);
}

}  // namespace moenav::cuda
