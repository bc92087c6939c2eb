// matmul / matmul_rows: argument checks, the choice of kernel family by weight dtype and
// instruction set, activation preparation and the split of work across threads. The kernels
// live in one file per family (matmul_float.cpp, dot_q8_0.cpp, dot_k_quants.cpp).
//
// Threading: rows of the weight are split in contiguous chunks, each a multiple of 16 rows so two
// threads never write the same 64-byte line of the output, and only as many threads are woken as
// the work pays for (a router matvec of 8 rows runs on the calling thread alone).
#include "backend/cpu/matmul.h"

#include <algorithm>
#include <array>

#include "backend/cpu/matmul_kernels.h"
#include "core/check.h"
#include "quant/quant.h"

namespace moenav::cpu {

detail::DotFn detail::integer_dot(Isa isa, DType weight_type, WeightRead read) {
  if (DotFn dot = dot_q8_0_family(isa, weight_type, read)) return dot;
  return dot_k_quant_family(isa, weight_type, read);
}

namespace {

constexpr int64_t kRowAlignment = 16;  // f32 outputs per 64-byte cache line
// Weight bytes x tokens worth waking a thread: at 16 KiB an expert matvec of the embedded model
// (52 KB) splits in two, and decode runs ~15% faster than at 64 KiB; 4 KiB is no better.
constexpr int64_t kMinBytesPerThread = 16 * 1024;
constexpr int64_t kGroupBytes = 256 * 1024;  // weight rows kept in L2 while tokens stream
// A thread's share of a one-token matmul at least this large is read with prefetching kernels
// (WeightRead::Streamed). Below it (the embedded model's experts: 26 KB a thread) the 4-8 KiB the
// prefetches run past the end of the range cost more than they hide.
constexpr int64_t kStreamedBytes = 256 * 1024;

void check_weight(const TensorView& weight) {
  MOENAV_CHECK(!weight.empty());
  MOENAV_CHECK(row_size_valid(weight.dtype, weight.cols()));
}

void integer_rows(Isa isa, const TensorView& weight, const PreparedInput& input, float* output,
                  int64_t output_stride, int64_t row_begin, int64_t row_end) {
  const int64_t row_bytes = weight.row_bytes();
  // A one-token read of a range this large streams from memory: its kernel prefetches.
  const bool streamed = input.n_tokens == 1 && (row_end - row_begin) * row_bytes >= kStreamedBytes;
  const detail::DotFn dot = detail::integer_dot(
      isa, weight.dtype, streamed ? detail::WeightRead::Streamed : detail::WeightRead::Cached);
  const detail::DotRowsFn dot_rows = detail::dot_q8_0_rows_family(isa, weight.dtype);
  const auto* weight_data = static_cast<const uint8_t*>(weight.data);
  const int64_t n_blocks = weight.cols() / dtype_block_size(weight.dtype);
  // The activations of token t: Q8_0Quad rows or the quantized blocks.
  const bool quads = detail::reads_activation_quads(isa, weight.dtype);
  MOENAV_CHECK(!quads ||
               input.quads.size() == static_cast<size_t>(input.n_tokens * quads_per_row(n_blocks)));
  const auto* activation_base =
      quads ? reinterpret_cast<const uint8_t*>(input.quads.data()) : input.quantized.data();
  const int64_t input_row_bytes =
      quads ? quads_per_row(n_blocks) * static_cast<int64_t>(sizeof(Q8_0Quad)) : input.row_bytes();
  const int64_t group_rows = std::max<int64_t>(1, kGroupBytes / row_bytes);
  for (int64_t group = row_begin; group < row_end; group += group_rows) {
    const int64_t group_end = std::min(row_end, group + group_rows);
    for (int64_t t = 0; t < input.n_tokens; t += detail::kDotTokens) {
      const int tokens =
          static_cast<int>(std::min<int64_t>(detail::kDotTokens, input.n_tokens - t));
      const uint8_t* activations = activation_base + t * input_row_bytes;
      int64_t row = group;
      // One token reads each weight once: a single row at a time keeps the read one sequential
      // stream (two interleaved rows are short streams the prefetcher keeps restarting).
      if (dot_rows != nullptr && tokens > 1) {
        for (; row + detail::kDotRows <= group_end; row += detail::kDotRows) {
          dot_rows(weight_data + row * row_bytes, row_bytes, activations, input_row_bytes, tokens,
                   n_blocks, output + t * output_stride + row, output_stride);
        }
      }
      for (; row < group_end; ++row) {
        dot(weight_data + row * row_bytes, activations, input_row_bytes, tokens, n_blocks,
            output + t * output_stride + row, output_stride);
      }
    }
  }
}

}  // namespace

RowSplit split_rows(const TensorView& weight, int64_t n_tokens, int pool_size) {
  return split_rows(weight.rows(), weight.bytes(), n_tokens, pool_size);
}

RowSplit split_rows(int64_t n_rows, int64_t weight_bytes, int64_t n_tokens, int pool_size) {
  const int64_t work = weight_bytes * std::max<int64_t>(1, n_tokens);
  const int64_t by_work = std::max<int64_t>(1, work / kMinBytesPerThread);
  const int64_t by_rows = (n_rows + kRowAlignment - 1) / kRowAlignment;
  const int64_t threads = std::clamp<int64_t>(std::min(by_work, by_rows), 1, pool_size);
  const int64_t rows_per_thread = (n_rows + threads - 1) / threads;
  return {threads, (rows_per_thread + kRowAlignment - 1) / kRowAlignment * kRowAlignment};
}

DType input_format_for(DType weight_type) {
  return detail::integer_dot(Isa::Scalar, weight_type) != nullptr
             ? quant::activation_type_for(weight_type)
             : DType::F32;
}

void prepare_input(DType weight_type, const float* input, int64_t n_tokens, int64_t cols,
                   PreparedInput& prepared, ThreadPool* pool) {
  MOENAV_CHECK(input != nullptr && n_tokens >= 0);
  prepared.format = input_format_for(weight_type);
  prepared.n_tokens = n_tokens;
  prepared.cols = cols;
  prepared.values = input;
  if (prepared.format == DType::F32) {
    prepared.quantized.clear();
    prepared.quads.clear();
    return;
  }
  MOENAV_CHECK(row_size_valid(prepared.format, cols));
  const int64_t row_bytes = prepared.row_bytes();
  prepared.quantized.resize(static_cast<size_t>(row_bytes * n_tokens));
  // The AVX-512 kernels of Q8_0 and Q4_0 read the quads (reads_activation_quads).
  const bool quads = prepared.format == DType::Q8_0 && isa_supported(Isa::Avx512);
  const int64_t n_blocks = cols / dtype_block_size(prepared.format);
  const int64_t n_quads = quads_per_row(n_blocks);
  prepared.quads.resize(quads ? static_cast<size_t>(n_tokens * n_quads) : 0);
  auto quantize_tokens = [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      uint8_t* row = prepared.quantized.data() + t * row_bytes;
      detail::quantize_activation_row(best_isa(), prepared.format, input + t * cols, row, cols);
      if (quads) {
        detail::activation_quads(best_isa(), row, n_blocks, prepared.quads.data() + t * n_quads);
      }
    }
  };
  if (pool != nullptr && n_tokens > 1) {
    pool->parallel_for(n_tokens, quantize_tokens);
  } else {
    quantize_tokens(0, n_tokens);
  }
}

void matmul_rows(const TensorView& weight, const PreparedInput& input, float* output,
                 int64_t output_stride, int64_t row_begin, int64_t row_end, Isa isa) {
  check_weight(weight);
  MOENAV_CHECK(output != nullptr && input.values != nullptr);
  MOENAV_CHECK(input.cols == weight.cols());
  MOENAV_CHECK(input.format == input_format_for(weight.dtype));
  MOENAV_CHECK(0 <= row_begin && row_begin <= row_end && row_end <= weight.rows());
  MOENAV_CHECK(isa_supported(isa));
  if (input.n_tokens == 0 || row_begin == row_end) return;
  if (input.format == DType::F32) {
    detail::matmul_float_rows(isa, weight.dtype, static_cast<const uint8_t*>(weight.data),
                              weight.row_bytes(), weight.cols(), input.values, input.n_tokens,
                              output, output_stride, row_begin, row_end);
    return;
  }
  integer_rows(isa, weight, input, output, output_stride, row_begin, row_end);
}

void matmul_rows(Isa isa, const TensorView& weight, const float* input, int64_t n_tokens,
                 float* output, int64_t output_stride, int64_t row_begin, int64_t row_end) {
  check_weight(weight);
  thread_local PreparedInput prepared;
  prepare_input(weight.dtype, input, n_tokens, weight.cols(), prepared);
  matmul_rows(weight, prepared, output, output_stride, row_begin, row_end, isa);
}

void matmul_rows(const TensorView& weight, const float* input, int64_t n_tokens, float* output,
                 int64_t output_stride, int64_t row_begin, int64_t row_end) {
  matmul_rows(best_isa(), weight, input, n_tokens, output, output_stride, row_begin, row_end);
}

void matmul(Isa isa, const TensorView& weight, const float* input, int64_t n_tokens, float* output,
            ThreadPool& pool) {
  check_weight(weight);
  MOENAV_CHECK(output != nullptr);
  const int64_t n_rows = weight.rows();
  if (n_tokens == 0 || n_rows == 0) return;
  // The caller's buffer, reused across calls. Workers must reach it through a reference: naming a
  // thread_local inside the lambda would give each worker its own (empty) instance.
  thread_local PreparedInput caller_prepared;
  PreparedInput& prepared = caller_prepared;
  prepare_input(weight.dtype, input, n_tokens, weight.cols(), prepared, &pool);
  const RowSplit split = split_rows(weight, n_tokens, pool.size());
  if (split.threads == 1) {
    matmul_rows(weight, prepared, output, n_rows, 0, n_rows, isa);
    return;
  }
  pool.run([&](int thread, int) {
    const auto [begin, end] = split.rows_of(thread, n_rows);
    if (begin < end) matmul_rows(weight, prepared, output, n_rows, begin, end, isa);
  });
}

void matmul(const TensorView& weight, const float* input, int64_t n_tokens, float* output,
            ThreadPool& pool) {
  matmul(best_isa(), weight, input, n_tokens, output, pool);
}

void matmul_shared_input(std::span<const TensorView* const> weights, const float* input,
                         int64_t n_tokens, std::span<float* const> outputs, ThreadPool& pool) {
  MOENAV_CHECK(!weights.empty() && weights.size() <= kMaxSharedInput);
  MOENAV_CHECK(weights.size() == outputs.size());
  if (n_tokens == 0) return;
  // The caller's buffers, reached by the workers through `prepared` (see matmul).
  thread_local std::array<PreparedInput, kMaxSharedInput> storage;
  std::array<const PreparedInput*, kMaxSharedInput> prepared{};
  int64_t total_rows = 0, total_bytes = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const TensorView& weight = *weights[i];
    check_weight(weight);
    MOENAV_CHECK(weight.cols() == weights[0]->cols() && outputs[i] != nullptr);
    const DType format = input_format_for(weight.dtype);
    for (size_t j = 0; j < i && prepared[i] == nullptr; ++j) {
      if (prepared[j]->format == format) prepared[i] = prepared[j];
    }
    if (prepared[i] == nullptr) {
      prepare_input(weight.dtype, input, n_tokens, weight.cols(), storage[i], &pool);
      prepared[i] = &storage[i];
    }
    total_rows += weight.rows();
    total_bytes += weight.bytes();
  }
  // Rows [begin, end) of the weights taken end to end.
  auto rows = [&](int64_t begin, int64_t end) {
    int64_t offset = 0;
    for (size_t i = 0; i < weights.size(); ++i) {
      const int64_t n = weights[i]->rows();
      const int64_t first = std::max<int64_t>(begin - offset, 0);
      const int64_t last = std::min<int64_t>(end - offset, n);
      if (first < last) matmul_rows(*weights[i], *prepared[i], outputs[i], n, first, last);
      offset += n;
    }
  };
  const RowSplit split = split_rows(total_rows, total_bytes, n_tokens, pool.size());
  if (split.threads == 1) return rows(0, total_rows);
  pool.run([&](int thread, int) {
    const auto [begin, end] = split.rows_of(thread, total_rows);
    if (begin < end) rows(begin, end);
  });
}

}  // namespace moenav::cpu
