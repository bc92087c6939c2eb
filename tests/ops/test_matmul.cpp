// matmul against references, one table of cases (dtype x shape x tokens), every instruction set
// variant this CPU supports forced in turn.
//   Float weights (F32/F16/BF16) and the dequantize fallback: against a double-precision dot of
//   the dequantized weights; per element |error| <= 1e-5 * sum |w * x| (f32 accumulation of K
//   products with 8-16 partial sums is far inside that), and NMSE <= 1e-10.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/matmul.h"
#include "core/thread_pool.h"
#include "quant/quant.h"

namespace moenav {
namespace {

struct Case {
  DType dtype;
  int64_t rows;     // N
  int64_t cols;     // K
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
  std::vector<float> input;        // [tokens, K]
  std::vector<double> reference;   // [tokens, N]
  std::vector<double> magnitude;   // [tokens, N] sum |w x|
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
  const int64_t token_counts[] = {1, 3, 17, 64};
  for (int64_t tokens : token_counts) {
    for (DType dtype : float_types) {
      for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 16}, {7, 37}, {33, 256}, {130, 4103}}) {
        table.push_back({dtype, rows, cols, tokens});
      }
    }
    for (DType dtype : block_types) {
      for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 32}, {7, 64}, {33, 256}, {129, 1024}}) {
        table.push_back({dtype, rows, cols, tokens});
      }
    }
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

void expect_close(const Case& c, cpu::Isa isa, const Problem& p, const std::vector<float>& output) {
  double error_sum = 0.0, reference_sum = 0.0;
  int reported = 0;
  for (size_t i = 0; i < output.size(); ++i) {
    const double error = output[i] - p.reference[i];
    error_sum += error * error;
    reference_sum += p.reference[i] * p.reference[i];
    if (std::fabs(error) > 1e-5 * p.magnitude[i] + 1e-30 && reported++ < 3) {
      ADD_FAILURE() << case_name(c, isa) << " element " << i << ": " << output[i] << " vs "
                    << p.reference[i] << " (sum |w x| = " << p.magnitude[i] << ")";
    }
  }
  EXPECT_LE(error_sum / std::max(reference_sum, 1e-30), 1e-10) << case_name(c, isa);
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
