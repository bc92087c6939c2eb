// matmul against references, one table of cases (dtype x shape x tokens), every instruction set
// variant this CPU supports forced in turn.
//   Float weights (F32/F16/BF16): against a
//   double-precision dot of the dequantized weights; per element |error| <= 1e-5 * sum |w * x|
//   (f32 accumulation of K products with 8-16 partial sums is far inside that), NMSE <= 1e-10.
//   Integer kernels (Q8_0, Q4_0 x Q8_0; Q2_K..Q6_K x Q8_K): on the same quantized
//   activations, the scalar integer reference against a double dot of dequantized weights and
//   activations (same bounds), and every SIMD variant against the scalar reference: exact int32
//   block sums, so only float accumulation order differs: |error| <= 1e-6 * sum |w * x|
//   (NMSE <= 1e-10: a single output may be a near-cancellation).
//   End to end (f32 input quantized inside matmul) against the float reference: NMSE <= 1e-2, a
//   wiring check (activation quantization adds ~1e-4 over many outputs, more on a single
//   near-cancelling one; a wrong layout gives ~1).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/matmul.h"
#include "backend/cpu/matmul_kernels.h"
#include "core/thread_pool.h"
#include "quant/blocks.h"
#include "quant/quant.h"

namespace moenav {
namespace {

struct Case {
  DType dtype;
  int64_t rows;  // N
  int64_t cols;  // K
  int64_t tokens;
};

std::string case_name(const Case& c, cpu::Isa isa) {
  return std::string(dtype_name(c.dtype)) + " N=" + std::to_string(c.rows) +
         " K=" + std::to_string(c.cols) + " T=" + std::to_string(c.tokens) + " " +
         std::string(cpu::isa_name(isa));
}

struct Problem {
  std::vector<uint8_t> weight_bytes;
  TensorView weight;
  std::vector<float> input;       // [tokens, K]
  std::vector<double> reference;  // [tokens, N]
  std::vector<double> magnitude;  // [tokens, N] sum |w x|
};

Problem make_problem(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Problem p;
  const int64_t row_bytes = dtype_bytes(c.dtype, c.cols);
  p.weight_bytes.resize(static_cast<size_t>(row_bytes * c.rows));
  std::vector<float> row(static_cast<size_t>(c.cols));
  std::vector<float> dequantized(static_cast<size_t>(c.rows * c.cols));
  for (int64_t n = 0; n < c.rows; ++n) {
    for (float& v : row) v = normal(rng) * 0.5f;
    quant::quantize_row(c.dtype, row.data(), p.weight_bytes.data() + n * row_bytes, c.cols);
    quant::dequantize_row(c.dtype, p.weight_bytes.data() + n * row_bytes,
                          dequantized.data() + n * c.cols, c.cols);
  }
  p.weight = TensorView{c.dtype, Shape{c.rows, c.cols}, p.weight_bytes.data()};
  p.input.resize(static_cast<size_t>(c.tokens * c.cols));
  for (float& v : p.input) v = normal(rng);
  p.reference.assign(static_cast<size_t>(c.tokens * c.rows), 0.0);
  p.magnitude.assign(static_cast<size_t>(c.tokens * c.rows), 0.0);
  for (int64_t t = 0; t < c.tokens; ++t) {
    for (int64_t n = 0; n < c.rows; ++n) {
      double sum = 0.0, magnitude = 0.0;
      for (int64_t k = 0; k < c.cols; ++k) {
        const double product = double{dequantized[n * c.cols + k]} * p.input[t * c.cols + k];
        sum += product;
        magnitude += std::fabs(product);
      }
      p.reference[t * c.rows + n] = sum;
      p.magnitude[t * c.rows + n] = magnitude;
    }
  }
  return p;
}

std::vector<Case> cases() {
  std::vector<Case> table;
  const DType float_types[] = {DType::F32, DType::F16, DType::BF16};
  const DType block_types[] = {DType::Q8_0, DType::Q4_0};
  const DType k_types[] = {DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::Q2_K, DType::Q3_K};
  const int64_t token_counts[] = {1, 3, 17, 64};
  for (int64_t tokens : token_counts) {
    for (DType dtype : float_types) {
      for (auto [rows, cols] :
           {std::pair<int64_t, int64_t>{1, 16}, {7, 37}, {33, 256}, {130, 4103}}) {
        table.push_back({dtype, rows, cols, tokens});
      }
    }
    for (DType dtype : block_types) {
      for (auto [rows, cols] :
           {std::pair<int64_t, int64_t>{1, 32}, {7, 96}, {33, 256}, {129, 1024}}) {
        table.push_back({dtype, rows, cols, tokens});
      }
    }
    for (DType dtype : k_types) {
      for (auto [rows, cols] :
           {std::pair<int64_t, int64_t>{1, 256}, {7, 512}, {33, 256}, {129, 1536}}) {
        table.push_back({dtype, rows, cols, tokens});
      }
    }
  }
  // Rows of 6 blocks: the AVX-512 kernels step four blocks at a time, and 1 and 3 blocks past
  // the last step are covered above (K = 32, 96, ...), 2 here. Appended, so the cases above keep
  // their seeds.
  for (int64_t tokens : token_counts) {
    for (DType dtype : block_types) table.push_back({dtype, 5, 192, tokens});
  }
  return table;
}

std::vector<cpu::Isa> supported_isas() {
  std::vector<cpu::Isa> isas;
  for (int i = 0; i < static_cast<int>(cpu::Isa::Count); ++i) {
    if (cpu::isa_supported(static_cast<cpu::Isa>(i))) isas.push_back(static_cast<cpu::Isa>(i));
  }
  return isas;
}

template <typename Reference>
void expect_close(const std::string& name, const std::vector<float>& output,
                  const Reference& reference, const std::vector<double>& magnitude,
                  double tolerance, double max_nmse) {
  double error_sum = 0.0, reference_sum = 0.0;
  int reported = 0;
  for (size_t i = 0; i < output.size(); ++i) {
    const double error = output[i] - double{reference[i]};
    error_sum += error * error;
    reference_sum += double{reference[i]} * reference[i];
    if (!(std::fabs(error) <= tolerance * magnitude[i] + 1e-30) && reported++ < 3) {
      ADD_FAILURE() << name << " element " << i << ": " << output[i] << " vs " << reference[i]
                    << " (sum |w x| = " << magnitude[i] << ")";
    }
  }
  EXPECT_LE(error_sum / std::max(reference_sum, 1e-30), max_nmse) << name;
}

void expect_close(const Case& c, cpu::Isa isa, const Problem& p, const std::vector<float>& output) {
  const bool integer = cpu::input_format_for(c.dtype) != DType::F32;
  if (integer) {  // activation quantization error: NMSE only
    const std::vector<double> unbounded(output.size(), INFINITY);
    expect_close(case_name(c, isa) + " end to end", output, p.reference, unbounded, 1.0, 1e-2);
  } else {
    expect_close(case_name(c, isa), output, p.reference, p.magnitude, 1e-5, 1e-10);
  }
}

TEST(Matmul, MatchesReferenceEveryIsa) {
  ThreadPool pool(2);
  uint32_t seed = 1;
  for (const Case& c : cases()) {
    const Problem p = make_problem(c, seed++);
    for (cpu::Isa isa : supported_isas()) {
      std::vector<float> output(static_cast<size_t>(c.tokens * c.rows), NAN);
      cpu::matmul(isa, p.weight, p.input.data(), c.tokens, output.data(), pool);
      expect_close(c, isa, p, output);
    }
  }
}

// Reference for the integer kernels: dequantized weights x dequantized prepared activations.
void integer_reference(const Case& c, const Problem& p, const cpu::PreparedInput& prepared,
                       std::vector<double>* reference, std::vector<double>* magnitude) {
  std::vector<float> weights(static_cast<size_t>(c.rows * c.cols));
  std::vector<float> activations(static_cast<size_t>(c.tokens * c.cols));
  for (int64_t n = 0; n < c.rows; ++n) {
    quant::dequantize_row(c.dtype, p.weight.row(n), weights.data() + n * c.cols, c.cols);
  }
  for (int64_t t = 0; t < c.tokens; ++t) {
    quant::dequantize_row(prepared.format, prepared.quantized.data() + t * prepared.row_bytes(),
                          activations.data() + t * c.cols, c.cols);
  }
  reference->assign(static_cast<size_t>(c.tokens * c.rows), 0.0);
  magnitude->assign(static_cast<size_t>(c.tokens * c.rows), 0.0);
  for (int64_t t = 0; t < c.tokens; ++t) {
    for (int64_t n = 0; n < c.rows; ++n) {
      double sum = 0.0, absolute = 0.0;
      for (int64_t k = 0; k < c.cols; ++k) {
        const double product = double{weights[n * c.cols + k]} * activations[t * c.cols + k];
        sum += product;
        absolute += std::fabs(product);
      }
      (*reference)[t * c.rows + n] = sum;
      (*magnitude)[t * c.rows + n] = absolute;
    }
  }
}

TEST(Matmul, IntegerKernelsMatchScalarReference) {
  uint32_t seed = 1000;
  int checked = 0;
  for (const Case& c : cases()) {
    if (cpu::input_format_for(c.dtype) == DType::F32) continue;
    const Problem p = make_problem(c, seed++);
    cpu::PreparedInput prepared;
    cpu::prepare_input(c.dtype, p.input.data(), c.tokens, c.cols, prepared);
    ASSERT_EQ(prepared.format, quant::activation_type_for(c.dtype));
    std::vector<double> reference, magnitude;
    integer_reference(c, p, prepared, &reference, &magnitude);
    std::vector<float> scalar(static_cast<size_t>(c.tokens * c.rows), NAN);
    cpu::matmul_rows(p.weight, prepared, scalar.data(), c.rows, 0, c.rows, cpu::Isa::Scalar);
    expect_close(case_name(c, cpu::Isa::Scalar) + " vs double", scalar, reference, magnitude, 1e-5,
                 1e-10);
    for (cpu::Isa isa : supported_isas()) {
      if (isa == cpu::Isa::Scalar) continue;
      std::vector<float> output(scalar.size(), NAN);
      cpu::matmul_rows(p.weight, prepared, output.data(), c.rows, 0, c.rows, isa);
      expect_close(case_name(c, isa) + " vs scalar", output, scalar, magnitude, 1e-6, 1e-10);
      ++checked;
    }
  }
  EXPECT_GT(checked, 0) << "no SIMD variant on this CPU: only the scalar reference was checked";
}

TEST(Matmul, PreparedInputIsSharedAcrossWeights) {
  // Two weights of different k-quant types share one Q8_K preparation.
  const Case first{DType::Q4_K, 20, 512, 3}, second{DType::Q6_K, 9, 512, 3};
  Problem a = make_problem(first, 5), b = make_problem(second, 6);
  b.input = a.input;
  cpu::PreparedInput prepared;
  cpu::prepare_input(DType::Q4_K, a.input.data(), 3, 512, prepared);
  ASSERT_EQ(cpu::input_format_for(DType::Q6_K), prepared.format);
  std::vector<float> via_prepared(3 * 9), direct(3 * 9);
  cpu::matmul_rows(b.weight, prepared, via_prepared.data(), 9, 0, 9);
  cpu::matmul_rows(b.weight, b.input.data(), 3, direct.data(), 9, 0, 9);
  EXPECT_EQ(via_prepared, direct);
}

// prepare_input's SIMD quantizers must produce the reference bytes, ties included (x * 1/d on an
// exact .5: roundf rounds away from zero for Q8_0, nearest_int to even for Q8_K) and blocks whose
// extreme magnitude appears with both signs (the first one sets the sign of Q8_K's scale).
TEST(Matmul, PreparedActivationsMatchReferenceQuantizer) {
  constexpr int64_t cols = 1024;
  std::vector<float> input = make_problem({DType::F32, 1, cols, 1}, 77).input;
  input.resize(3 * cols);
  for (int64_t i = 0; i < cols; ++i) {
    input[cols + i] = static_cast<float>((i % 255) - 127) + ((i % 3 == 0) ? 0.5f : 0.0f);
    input[2 * cols + i] = (i % 256 == 3) ? -4.0f : (i % 256 == 9) ? 4.0f : 0.001f * (i % 7);
  }
  for (int64_t i = 0; i < 32; ++i) input[cols + i] = (i == 0) ? 127.0f : i - 15.5f;  // Q8_0 ties
  for (DType weight_type : {DType::Q8_0, DType::Q4_K}) {
    cpu::PreparedInput prepared;
    cpu::prepare_input(weight_type, input.data(), 3, cols, prepared);
    std::vector<uint8_t> reference(prepared.quantized.size());
    for (int64_t t = 0; t < 3; ++t) {
      quant::quantize_row(prepared.format, input.data() + t * cols,
                          reference.data() + t * prepared.row_bytes(), cols);
    }
    EXPECT_EQ(prepared.quantized, reference) << dtype_name(prepared.format);
    if (prepared.format != DType::Q8_0 || prepared.quads.empty()) continue;
    // On AVX-512 CPUs Q8_0 activations also come regrouped four blocks to a quad, each lane
    // with its 8 quants' negated sum and its block's scale, taken here from the reference bytes.
    const auto* blocks = reinterpret_cast<const quant::BlockQ8_0*>(reference.data());
    const int64_t n_blocks = cols / 32;
    ASSERT_EQ(prepared.quads.size(), static_cast<size_t>(3 * cpu::quads_per_row(n_blocks)));
    for (int64_t t = 0; t < 3; ++t) {
      for (int64_t b = 0; b < n_blocks; ++b) {
        const quant::BlockQ8_0& block = blocks[t * n_blocks + b];
        const cpu::Q8_0Quad& quad =
            prepared.quads[static_cast<size_t>(t * cpu::quads_per_row(n_blocks) + b / 4)];
        const int k = static_cast<int>(b % 4);
        for (int lane = 0; lane < 4; ++lane) {
          int sum = 0;
          for (int i = 4 * lane; i < 4 * lane + 4; ++i) {
            ASSERT_EQ(quad.low[16 * k + i], block.qs[i]);
            ASSERT_EQ(quad.high[16 * k + i], block.qs[16 + i]);
            sum += block.qs[i] + block.qs[16 + i];
          }
          ASSERT_EQ(quad.sums[4 * k + lane], -sum) << "token " << t << " block " << b;
          ASSERT_EQ(quad.scales[4 * k + lane], quant::fp16_to_fp32(block.d));
        }
      }
    }
  }
}

// The quads' two builders (SIMD and portable) agree byte for byte, the zero padding of a row's
// last partial quad included (7 blocks: one full quad and three of four blocks).
TEST(Matmul, ActivationQuadsAgreeOnEveryIsa) {
  constexpr int64_t cols = 7 * 32;
  const std::vector<float> input = make_problem({DType::F32, 1, cols, 1}, 78).input;
  std::vector<uint8_t> blocks(static_cast<size_t>(dtype_bytes(DType::Q8_0, cols)));
  quant::quantize_row(DType::Q8_0, input.data(), blocks.data(), cols);
  const int64_t n_quads = cpu::quads_per_row(7);
  ASSERT_EQ(n_quads, 2);
  std::vector<cpu::Q8_0Quad> portable(n_quads);
  cpu::detail::activation_quads(cpu::Isa::Scalar, blocks.data(), 7, portable.data());
  const cpu::Q8_0Quad& last = portable[1];
  for (int i = 48; i < 64; ++i) EXPECT_EQ(last.low[i] | last.high[i], 0) << "byte " << i;
  for (int lane = 12; lane < 16; ++lane) EXPECT_EQ(last.sums[lane] | int(last.scales[lane]), 0);
  for (cpu::Isa isa : supported_isas()) {
    std::vector<cpu::Q8_0Quad> quads(n_quads);
    std::memset(quads.data(), 0xAB, quads.size() * sizeof(cpu::Q8_0Quad));  // no stale bytes
    cpu::detail::activation_quads(isa, blocks.data(), 7, quads.data());
    EXPECT_EQ(std::memcmp(quads.data(), portable.data(), quads.size() * sizeof(cpu::Q8_0Quad)), 0)
        << cpu::isa_name(isa);
  }
}

// A token's output must not depend on the batch it is computed in (the server batches requests
// and promises each the bits of a lone greedy run): every token of a 7-token matmul, and any row
// subrange, equals the same token alone, bit for bit, on every instruction set.
TEST(Matmul, BatchAndRowRangeInvariant) {
  constexpr int64_t tokens = 7;
  for (DType dtype :
       {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K, DType::BF16, DType::F32}) {
    const Case c{dtype, 37, 256, tokens};
    const Problem p = make_problem(c, 123);
    for (cpu::Isa isa : supported_isas()) {
      std::vector<float> batched(static_cast<size_t>(tokens * c.rows));
      cpu::matmul_rows(isa, p.weight, p.input.data(), tokens, batched.data(), c.rows, 0, c.rows);
      for (int64_t t = 0; t < tokens; ++t) {
        std::vector<float> alone(static_cast<size_t>(c.rows), NAN);
        cpu::matmul_rows(isa, p.weight, p.input.data() + t * c.cols, 1, alone.data(), c.rows, 0,
                         c.rows);
        cpu::matmul_rows(isa, p.weight, p.input.data() + t * c.cols, 1, alone.data(), c.rows, 5, 6);
        for (int64_t n = 0; n < c.rows; ++n) {
          ASSERT_EQ(alone[n], batched[t * c.rows + n])
              << case_name(c, isa) << " token " << t << " row " << n;
        }
      }
    }
  }
}

// A one-token matmul over a thread's range of 256 KiB or more reads its weights with the
// prefetching kernels (WeightRead::Streamed), a single row with the cached ones: the same bits.
TEST(Matmul, StreamedWeightReadsGiveCachedBits) {
  using cpu::detail::WeightRead;
  for (DType dtype : {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q5_K, DType::Q6_K,
                      DType::Q2_K, DType::Q3_K}) {
    const Case c{dtype, 400, 2304, 1};  // Q2_K, the smallest: 400 x 756 bytes = 295 KiB
    ASSERT_GE(dtype_bytes(dtype, c.cols) * c.rows, 256 * 1024) << dtype_name(dtype);
    const Problem p = make_problem(c, 77);
    cpu::PreparedInput prepared;
    cpu::prepare_input(dtype, p.input.data(), 1, c.cols, prepared);
    for (cpu::Isa isa : supported_isas()) {
      if (isa != cpu::Isa::Scalar) {
        EXPECT_NE(cpu::detail::integer_dot(isa, dtype, WeightRead::Streamed),
                  cpu::detail::integer_dot(isa, dtype, WeightRead::Cached))
            << case_name(c, isa);
      }
      std::vector<float> whole(static_cast<size_t>(c.rows), NAN), alone(whole.size(), NAN);
      cpu::matmul_rows(p.weight, prepared, whole.data(), c.rows, 0, c.rows, isa);
      for (int64_t n = 0; n < c.rows; ++n) {
        cpu::matmul_rows(p.weight, prepared, alone.data(), c.rows, n, n + 1, isa);
      }
      EXPECT_EQ(whole, alone) << case_name(c, isa);
    }
  }
}

// Products sharing one input in one region give each weight's matmul bits, with weights of
// different activation formats (Q8_0, Q8_K, f32) and sizes, so row ranges cross from one weight
// to the next, for a decode token and a prefill batch.
TEST(Matmul, SharedInputEqualsSeparateProducts) {
  ThreadPool pool(3);
  for (int64_t tokens : {1, 9}) {
    const Problem q = make_problem({DType::Q8_0, 256, 512, tokens}, 5);
    const Problem k = make_problem({DType::Q4_K, 48, 512, tokens}, 6);
    const Problem v = make_problem({DType::F32, 80, 512, tokens}, 7);
    const Problem o = make_problem({DType::Q4_0, 1100, 512, tokens}, 8);
    const TensorView* weights[] = {&q.weight, &k.weight, &v.weight, &o.weight};
    std::vector<float> shared[4], separate[4];
    float* outputs[4];
    for (int i = 0; i < 4; ++i) {
      shared[i].assign(static_cast<size_t>(tokens * weights[i]->rows()), NAN);
      separate[i].assign(shared[i].size(), NAN);
      outputs[i] = shared[i].data();
      cpu::matmul(*weights[i], q.input.data(), tokens, separate[i].data(), pool);
    }
    cpu::matmul_shared_input(weights, q.input.data(), tokens, outputs, pool);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(shared[i], separate[i]) << "weight " << i << " T=" << tokens;
  }
}

TEST(Matmul, RowsSubrangeWithStride) {
  const Case c{DType::BF16, 50, 96, 5};
  const Problem p = make_problem(c, 99);
  const int64_t stride = c.rows + 3;
  std::vector<float> output(static_cast<size_t>(c.tokens * stride), -7.0f);
  cpu::matmul_rows(p.weight, p.input.data(), c.tokens, output.data(), stride, 10, 29);
  for (int64_t t = 0; t < c.tokens; ++t) {
    for (int64_t n = 0; n < stride; ++n) {
      const float value = output[t * stride + n];
      if (n < 10 || n >= 29) {
        EXPECT_EQ(value, -7.0f) << "t=" << t << " n=" << n << " written outside the range";
      } else {
        EXPECT_NEAR(value, p.reference[t * c.rows + n], 1e-5 * p.magnitude[t * c.rows + n]);
      }
    }
  }
}

TEST(Matmul, ReportsIsa) {
  EXPECT_TRUE(cpu::isa_supported(cpu::Isa::Scalar));
  EXPECT_TRUE(cpu::isa_supported(cpu::best_isa()));
  std::printf("best isa: %s\n", std::string(cpu::isa_name(cpu::best_isa())).c_str());
}

}  // namespace
}  // namespace moenav
