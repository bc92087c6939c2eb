// matmul / matmul_rows: argument checks, the choice of kernel family by weight dtype and
// instruction set, and the split of work across threads. The kernels themselves live in one file
// per family (matmul_float.cpp, dot_*.cpp).
//
// Threading: rows of the weight are split in contiguous chunks, each a multiple of 16 rows so two
// threads never write the same 64-byte line of the output, and only as many threads are woken as
// the work pays for (a router matvec of 8 rows runs on the calling thread alone).
#include "backend/cpu/matmul.h"

#include <algorithm>

#include "backend/cpu/matmul_kernels.h"
#include "core/check.h"

namespace moenav::cpu {
namespace {

constexpr int64_t kRowAlignment = 16;                // f32 outputs per 64-byte cache line
constexpr int64_t kMinBytesPerThread = 64 * 1024;    // weight bytes x tokens worth a wake-up

int64_t useful_threads(const TensorView& weight, int64_t n_tokens, int pool_size) {
  const int64_t work = weight.bytes() * std::max<int64_t>(1, n_tokens);
  const int64_t by_work = std::max<int64_t>(1, work / kMinBytesPerThread);
  const int64_t by_rows = (weight.rows() + kRowAlignment - 1) / kRowAlignment;
  return std::clamp<int64_t>(std::min(by_work, by_rows), 1, pool_size);
}

void check_arguments(const TensorView& weight, const float* input, int64_t n_tokens,
                     const float* output) {
  MOENAV_CHECK(!weight.empty() && input != nullptr && output != nullptr);
  MOENAV_CHECK(n_tokens >= 0);
  MOENAV_CHECK(row_size_valid(weight.dtype, weight.cols()));
}

}  // namespace

void matmul_rows(Isa isa, const TensorView& weight, const float* input, int64_t n_tokens,
                 float* output, int64_t output_stride, int64_t row_begin, int64_t row_end) {
  check_arguments(weight, input, n_tokens, output);
  MOENAV_CHECK(0 <= row_begin && row_begin <= row_end && row_end <= weight.rows());
  MOENAV_CHECK(isa_supported(isa));
  if (n_tokens == 0 || row_begin == row_end) return;
  detail::matmul_float_rows(isa, weight.dtype, static_cast<const uint8_t*>(weight.data),
                            weight.row_bytes(), weight.cols(), input, n_tokens, output,
                            output_stride, row_begin, row_end);
}

void matmul_rows(const TensorView& weight, const float* input, int64_t n_tokens, float* output,
                 int64_t output_stride, int64_t row_begin, int64_t row_end) {
  matmul_rows(best_isa(), weight, input, n_tokens, output, output_stride, row_begin, row_end);
}

void matmul(Isa isa, const TensorView& weight, const float* input, int64_t n_tokens,
            float* output, ThreadPool& pool) {
  check_arguments(weight, input, n_tokens, output);
  const int64_t n_rows = weight.rows();
  if (n_tokens == 0 || n_rows == 0) return;
  const int64_t threads = useful_threads(weight, n_tokens, pool.size());
  if (threads == 1) {
    matmul_rows(isa, weight, input, n_tokens, output, n_rows, 0, n_rows);
    return;
  }
  const int64_t rows_per_thread = (n_rows + threads - 1) / threads;
  const int64_t chunk = (rows_per_thread + kRowAlignment - 1) / kRowAlignment * kRowAlignment;
  pool.run([&](int thread, int) {
    const int64_t begin = std::min(n_rows, thread * chunk);
    const int64_t end = std::min(n_rows, begin + chunk);
    if (begin < end) matmul_rows(isa, weight, input, n_tokens, output, n_rows, begin, end);
  });
}

void matmul(const TensorView& weight, const float* input, int64_t n_tokens, float* output,
            ThreadPool& pool) {
  matmul(best_isa(), weight, input, n_tokens, output, pool);
}

}  // namespace moenav::cpu
