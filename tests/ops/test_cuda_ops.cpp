// The CUDA kernels against the CPU references, one table per op (label gpu). Without a usable
// device every GPU test skips, saying why; CudaAvailability runs everywhere and checks that the
// reason is reported instead of a crash.
//   matmul: against a double dot of the dequantized weights (the same reference as
//   test_matmul). The f32 paths (matvec for T <= 8, GEMM at GemmPrecision::F32) accumulate in
//   f32: NMSE <= 1e-10. The bf16 GEMM rounds activations (and dequantized weights) to 8-bit
//   mantissas, relative error <= 2^-9 each, ~1.3e-6 NMSE per rounding: NMSE <= 2e-5.
//   Elementwise ops, RMSNorm, RoPE: |error| <= 1e-5 relative (f32, different reduction order or
//   libm). Router: the same experts, weights within 1e-5. Attention: against
//   cpu::attention_head_reference (double sums), |error| <= 1e-4 * max |value|.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/attention.h"
#include "backend/cuda.h"
#include "backend/cuda_ops.h"
#include "layers/kv_cache.h"
#include "layers/moe/router.h"
#include "layers/norm.h"
#include "layers/rope.h"
#include "ops/cuda_test_support.h"
#include "quant/quant.h"

namespace moenav {
namespace {

TEST(CudaAvailability, SaysWhyWhenUnusable) {
  const Status status = cuda::available();
  auto context = cuda::Context::create(0, 0);
  if (status.ok()) {
    auto info = cuda::device_info();
    ASSERT_TRUE(info.ok()) << info.error();
    EXPECT_FALSE(info->name.empty());
    EXPECT_GT(info->total_bytes, 0);
    EXPECT_TRUE(context.ok()) << context.error();
  } else {
    EXPECT_FALSE(status.message().empty());
    EXPECT_NE(status.message().find("CUDA"), std::string::npos) << status.message();
    ASSERT_FALSE(context.ok());
    EXPECT_FALSE(context.error().empty());
    EXPECT_FALSE(cuda::device_info().ok());
  }
}

TEST_F(CudaTest, AllocatorEnforcesTheBudgetAndRecordsThePeak) {
  auto created = cuda::Context::create(0, int64_t{1} << 20);
  ASSERT_TRUE(created.ok()) << created.error();
  cuda::Context& budgeted = **created;
  auto too_big = budgeted.allocate(int64_t{2} << 20, "a 2 MiB tensor");
  ASSERT_FALSE(too_big.ok());
  EXPECT_NE(too_big.error().find("a 2 MiB tensor"), std::string::npos) << too_big.error();
  EXPECT_NE(too_big.error().find("budget"), std::string::npos) << too_big.error();
  {
    auto first = budgeted.allocate(256 << 10, "first");
    auto second = budgeted.allocate(512 << 10, "second");
    ASSERT_TRUE(first.ok() && second.ok());
    EXPECT_EQ(budgeted.allocated_bytes(), 768 << 10);
    EXPECT_FALSE(budgeted.allocate(512 << 10, "third").ok());
  }
  EXPECT_EQ(budgeted.allocated_bytes(), 0);
  EXPECT_EQ(budgeted.peak_bytes(), 768 << 10);
}

// --- matmul ---------------------------------------------------------------------------------

struct MatmulCase {
  DType dtype;
  int64_t tokens;
  cuda::GemmPrecision precision;
  int64_t cols = 512;  // 2 super-blocks; plain types also take widths that are not whole blocks
};

void PrintTo(const MatmulCase& c, std::ostream* out) {
  *out << dtype_name(c.dtype) << " T=" << c.tokens << " K=" << c.cols
       << (c.cols % 32 != 0 ? " ragged"
           : c.tokens <= cuda::kMatvecMaxTokens ? " matvec"
           : c.precision == cuda::GemmPrecision::Bf16 ? " gemm bf16" : " gemm f32");
}

class CudaMatmul : public CudaTest, public ::testing::WithParamInterface<MatmulCase> {};

TEST_P(CudaMatmul, MatchesDequantizedReference) {
  const MatmulCase c = GetParam();
  const int64_t rows = 70, cols = c.cols;  // 70 rows: a partial block of the matvec's 4 rows
  const int64_t row_bytes = dtype_bytes(c.dtype, cols);
  std::vector<uint8_t> weight(static_cast<size_t>(rows * row_bytes));
  std::vector<float> dequantized(static_cast<size_t>(rows * cols));
  const std::vector<float> source = random_floats(dequantized.size(), 7, 0.5f);
  for (int64_t n = 0; n < rows; ++n) {
    quant::quantize_row(c.dtype, source.data() + n * cols, weight.data() + n * row_bytes, cols);
    quant::dequantize_row(c.dtype, weight.data() + n * row_bytes, dequantized.data() + n * cols,
                          cols);
  }
  const std::vector<float> input = random_floats(static_cast<size_t>(c.tokens * cols), 11);

  cuda::DeviceBuffer weight_device = upload(weight);
  cuda::DeviceBuffer input_device = upload(input);
  auto output_device = context_->allocate(c.tokens * rows * 4, "output");
  ASSERT_TRUE(output_device.ok()) << output_device.error();
  context_->set_gemm_precision(c.precision);
  const cuda::DeviceWeight view{c.dtype, rows, cols, weight_device.data()};
  const Status status = cuda::matmul(*context_, view, input_device.as<float>(), c.tokens,
                                     output_device->as<float>());
  ASSERT_TRUE(status.ok()) << status.message();
  const std::vector<float> output = download<float>(*output_device, static_cast<size_t>(c.tokens * rows));

  double error = 0.0, energy = 0.0;
  for (int64_t t = 0; t < c.tokens; ++t) {
    for (int64_t n = 0; n < rows; ++n) {
      double reference = 0.0;
      for (int64_t k = 0; k < cols; ++k) {
        reference += static_cast<double>(dequantized[static_cast<size_t>(n * cols + k)]) *
                     input[static_cast<size_t>(t * cols + k)];
      }
      const double difference = output[static_cast<size_t>(t * rows + n)] - reference;
      error += difference * difference;
      energy += reference * reference;
    }
  }
  const bool bf16 = c.tokens > cuda::kMatvecMaxTokens && c.precision == cuda::GemmPrecision::Bf16 && c.cols % 32 == 0;
  EXPECT_LE(error / energy, bf16 ? 2e-5 : 1e-10);
}

std::vector<MatmulCase> matmul_cases() {
  std::vector<MatmulCase> cases;
  for (DType dtype : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K,
                      DType::Q5_K, DType::Q6_K}) {
    for (int64_t tokens : {1, 2, 3, 8}) cases.push_back({dtype, tokens, cuda::GemmPrecision::Bf16});
    // 48 chunks: a matvec block's 128 threads take 32 chunks a step, then 16.
    for (int64_t tokens : {1, 5}) cases.push_back({dtype, tokens, cuda::GemmPrecision::Bf16, 1536});
    for (cuda::GemmPrecision precision : {cuda::GemmPrecision::Bf16, cuda::GemmPrecision::F32})
      cases.push_back({dtype, 40, precision});
  }
  for (DType dtype : {DType::F32, DType::F16, DType::BF16}) {  // MLA's per-head widths of small models
    for (int64_t tokens : {1, 40}) cases.push_back({dtype, tokens, cuda::GemmPrecision::Bf16, 48});
  }
  cases.push_back({DType::F32, 3, cuda::GemmPrecision::F32, 16});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Formats, CudaMatmul, ::testing::ValuesIn(matmul_cases()));

// Attention's q, k and v in one launch: each part's output as matmul alone gives it, bit for bit;
// parts of different types or widths, and prefill's GEMMs, go one by one.
TEST_F(CudaTest, MatmulPartsEqualSeparateMatmuls) {
  struct Part {
    DType dtype;
    int64_t rows, cols;
  };
  const std::vector<std::vector<Part>> cases = {
      {{DType::Q4_0, 70, 256}, {DType::Q4_0, 6, 256}, {DType::Q4_0, 33, 256}},  // one launch
      {{DType::Q8_0, 9, 256}, {DType::Q4_0, 5, 256}},                           // types differ
      {{DType::F32, 8, 64}, {DType::F32, 0, 64}, {DType::F32, 4, 64}},          // an empty part
  };
  for (const std::vector<Part>& parts : cases) {
    for (int64_t tokens : {1, 3, 12}) {
      const int64_t cols = parts[0].cols;
      cuda::DeviceBuffer input = upload(random_floats(static_cast<size_t>(tokens * cols), 21));
      std::vector<cuda::DeviceBuffer> weights, together, alone;
      std::vector<cuda::MatmulPart> launch;
      for (size_t p = 0; p < parts.size(); ++p) {
        const Part& part = parts[p];
        const int64_t row_bytes = dtype_bytes(part.dtype, cols);
        std::vector<uint8_t> bytes(static_cast<size_t>(std::max<int64_t>(part.rows, 1) * row_bytes));
        const std::vector<float> source = random_floats(static_cast<size_t>(part.rows * cols), 30 + p);
        for (int64_t r = 0; r < part.rows; ++r) {
          quant::quantize_row(part.dtype, source.data() + r * cols,
                              bytes.data() + r * row_bytes, cols);
        }
        weights.push_back(upload(bytes));
        together.push_back(upload(std::vector<float>(static_cast<size_t>(std::max<int64_t>(tokens * part.rows, 1)))));
        alone.push_back(upload(std::vector<float>(static_cast<size_t>(std::max<int64_t>(tokens * part.rows, 1)))));
        launch.push_back({{part.dtype, part.rows, cols, weights.back().data()}, together.back().as<float>()});
      }
      ASSERT_TRUE(cuda::matmul_parts(*context_, launch.data(), launch.size(), input.as<float>(), tokens).ok());
      for (size_t p = 0; p < parts.size(); ++p) {
        ASSERT_TRUE(cuda::matmul(*context_, launch[p].weight, input.as<float>(), tokens, alone[p].as<float>()).ok());
        const auto n = static_cast<size_t>(tokens * parts[p].rows);
        EXPECT_EQ(download<float>(together[p], n), download<float>(alone[p], n))
            << "part " << p << " of " << parts.size() << ", " << tokens << " tokens";
      }
    }
  }
  const cuda::MatmulPart four[4] = {};
  EXPECT_FALSE(cuda::matmul_parts(*context_, four, 4, nullptr, 1).ok());
}

TEST(CudaMatmulArguments, RejectsUnsupportedTypesAndPartialBlocks) {
  EXPECT_FALSE(cuda::matmul_supported(DType::Q2_K));
  EXPECT_FALSE(cuda::matmul_supported(DType::I32));
  EXPECT_TRUE(cuda::matmul_supported(DType::Q4_K));
}

// --- routed experts chosen on the device ----------------------------------------------------

// --- elementwise, norm, rope ----------------------------------------------------------------

TEST_F(CudaTest, RmsNormMatchesCpu) {
  const int64_t rows = 5, dim = 320;
  const std::vector<float> input = random_floats(static_cast<size_t>(rows * dim), 3, 2.0f);
  const std::vector<float> weight = random_floats(static_cast<size_t>(dim), 4);
  std::vector<float> expected(input.size());
  rms_norm(input.data(), weight.data(), expected.data(), rows, dim, 1e-5f);
  cuda::DeviceBuffer x = upload(input), w = upload(weight);
  ASSERT_TRUE(cuda::rms_norm(*context_, x.as<float>(), w.as<float>(), x.as<float>(), rows, dim, 1e-5f).ok());
  expect_close(download<float>(x, input.size()), expected, 1e-5f, "rms_norm in place");
}

TEST_F(CudaTest, AddRmsNormAddsTheResidualThenNorms) {
  const int64_t rows = 3, dim = 4100;  // more elements than the block's threads, and ragged
  const std::vector<float> hidden = random_floats(static_cast<size_t>(rows * dim), 5, 2.0f);
  const std::vector<float> residual = random_floats(hidden.size(), 6, 2.0f);
  const std::vector<float> weight = random_floats(static_cast<size_t>(dim), 7);
  std::vector<float> sum(hidden.size()), expected(hidden.size());
  for (size_t i = 0; i < sum.size(); ++i) sum[i] = hidden[i] + residual[i];
  rms_norm(sum.data(), weight.data(), expected.data(), rows, dim, 1e-5f);
  cuda::DeviceBuffer h = upload(hidden), r = upload(residual), w = upload(weight), out = upload(hidden);
  ASSERT_TRUE(cuda::add_rms_norm(*context_, h.as<float>(), r.as<float>(), w.as<float>(), out.as<float>(), rows, dim,
                                 1e-5f).ok());
  EXPECT_EQ(download<float>(h, sum.size()), sum);  // the stream itself, exactly
  expect_close(download<float>(out, expected.size()), expected, 1e-5f, "add_rms_norm");
}

TEST_F(CudaTest, RopeMatchesCpuInBothStylesAndPartialRotation) {
  const int64_t tokens = 3, heads = 4, key_heads = 2, head_dim = 64;  // keys rotated in the same launch
  const std::vector<int32_t> positions = {0, 7, 1000};
  for (RopeStyle style : {RopeStyle::Neox, RopeStyle::Interleaved}) {
    for (int64_t rotary : {head_dim, head_dim / 2}) {
      const Rope reference(rotary, 10000.0, style);
      std::vector<float> x = random_floats(static_cast<size_t>(tokens * heads * head_dim), 5);
      std::vector<float> keys = random_floats(static_cast<size_t>(tokens * key_heads * head_dim), 6);
      cuda::DeviceBuffer device_x = upload(x), frequency = upload(reference.inverse_frequency());
      cuda::DeviceBuffer device_keys = upload(keys), device_positions = upload(positions);
      for (int64_t t = 0; t < tokens; ++t) {
        const int32_t position = positions[static_cast<size_t>(t)];
        reference.apply(x.data() + t * heads * head_dim, heads, head_dim, position);
        reference.apply(keys.data() + t * key_heads * head_dim, key_heads, head_dim, position);
      }
      cuda::RopeArgs args;
      args.x = device_x.as<float>();
      args.n_tokens = tokens;
      args.n_heads = heads;
      args.head_stride = head_dim;
      args.token_stride = heads * head_dim;
      args.rotary_dim = rotary;
      args.inverse_frequency = frequency.as<float>();
      args.positions = device_positions.as<int32_t>();
      args.neox = style == RopeStyle::Neox;
      args.attention_factor = reference.attention_factor();
      args.keys = device_keys.as<float>();
      args.n_key_heads = key_heads;
      args.key_token_stride = key_heads * head_dim;
      ASSERT_TRUE(cuda::rope(*context_, args).ok());
      const std::string what =
          fmt::format("rope {} rotary {}", style == RopeStyle::Neox ? "neox" : "interleaved", rotary);
      expect_close(download<float>(device_x, x.size()), x, 1e-5f, what);
      expect_close(download<float>(device_keys, keys.size()), keys, 1e-5f, what + " keys");
    }
  }
}

TEST_F(CudaTest, SiluMulAndAddMatchCpu) {
  const size_t n = 1000;
  const std::vector<float> gate = random_floats(n, 1, 3.0f), up = random_floats(n, 2);
  std::vector<float> expected_silu(n), expected_sum(n);
  for (size_t i = 0; i < n; ++i) {
    expected_silu[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
    expected_sum[i] = gate[i] + up[i];
  }
  cuda::DeviceBuffer g = upload(gate), u = upload(up);
  auto out = context_->allocate(static_cast<int64_t>(n * 4), "out");
  ASSERT_TRUE(out.ok());
  ASSERT_TRUE(cuda::silu_mul(*context_, g.as<float>(), u.as<float>(), out->as<float>(), n).ok());
  expect_close(download<float>(*out, n), expected_silu, 1e-5f, "silu_mul");
  ASSERT_TRUE(cuda::add(*context_, g.as<float>(), u.as<float>(), g.as<float>(), n).ok());
  expect_close(download<float>(g, n), expected_sum, 1e-6f, "add in place");
}

// gpt-oss's clamped SwiGLU (as layers/ffn.cpp's activation), a broadcast bias, the sigmoid-gated
// add of Qwen2-MoE's shared expert, and a column block copied between row strides.
TEST_F(CudaTest, ClampedSwigluBiasGatedAddAndColumnCopyMatchCpu) {
  const int64_t rows = 5, width = 200;
  const size_t n = static_cast<size_t>(rows * width);
  const float alpha = 1.702f, limit = 7.0f;
  const std::vector<float> gate = random_floats(n, 3, 6.0f), up = random_floats(n, 4, 6.0f);
  const std::vector<float> bias = random_floats(static_cast<size_t>(width), 5);
  const std::vector<float> logits = random_floats(static_cast<size_t>(rows), 6, 2.0f);
  std::vector<float> clamped(n), biased(n), gated(n);
  for (size_t i = 0; i < n; ++i) {
    const float g = std::min(gate[i], limit), u = std::clamp(up[i], -limit, limit);
    clamped[i] = (u + 1.0f) * (g / (1.0f + std::exp(-g * alpha)));
    biased[i] = gate[i] + bias[i % static_cast<size_t>(width)];
    gated[i] = up[i] + gate[i] / (1.0f + std::exp(-logits[i / static_cast<size_t>(width)]));
  }
  cuda::DeviceBuffer g = upload(gate), u = upload(up), b = upload(bias), l = upload(logits);
  auto out = context_->allocate(static_cast<int64_t>(n * 4), "out");
  ASSERT_TRUE(out.ok());
  ASSERT_TRUE(cuda::clamped_swiglu(*context_, g.as<float>(), u.as<float>(), out->as<float>(), n, alpha, limit).ok());
  expect_close(download<float>(*out, n), clamped, 1e-5f, "clamped_swiglu");
  ASSERT_TRUE(cuda::add_gated(*context_, u.as<float>(), g.as<float>(), l.as<float>(), rows, width).ok());
  expect_close(download<float>(u, n), gated, 1e-5f, "add_gated");
  ASSERT_TRUE(cuda::add_bias(*context_, g.as<float>(), b.as<float>(), rows, width).ok());
  expect_close(download<float>(g, n), biased, 1e-6f, "add_bias");

  // Columns [30, 30 + 17) of the [5, 200] biased rows into a [5, 20] block at column 2.
  const int64_t first = 30, columns = 17, stride = 20;
  auto block = context_->allocate(rows * stride * 4, "block");
  ASSERT_TRUE(block.ok());
  ASSERT_TRUE(context_->zero(block->data(), rows * stride * 4).ok());
  ASSERT_TRUE(cuda::copy_columns(*context_, g.as<float>() + first, width, block->as<float>() + 2, stride, rows, columns).ok());
  std::vector<float> expected(static_cast<size_t>(rows * stride), 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < columns; ++i)
      expected[static_cast<size_t>(r * stride + 2 + i)] = biased[static_cast<size_t>(r * width + first + i)];
  EXPECT_EQ(download<float>(*block, expected.size()), expected);
}

// An f16 K/V store gives the CPU KvCache's bits: saturated to +-65504, rounded to nearest even
// (normal, subnormal and out-of-range values); an f32 store is a copy. Rows land at the cache rows
// of their positions, read on the device.
TEST_F(CudaTest, KvStoresMatchTheCpuCache) {
  std::vector<float> values = random_floats(4000, 9, 30.0f);
  for (float extreme : {70000.0f, -1e9f, 65519.0f, 3e-6f, -6e-8f, 1e-9f, 0.0f}) values.push_back(extreme);
  KvCache cache(1, KvCache::Gqa{1, static_cast<int64_t>(values.size()), DType::F16}, 1);
  cache.reserve(1);
  cache.store_value(0, 0, values.data());
  std::vector<uint16_t> expected(values.size());
  std::memcpy(expected.data(), cache.head_values(0, 0), expected.size() * 2);
  cuda::DeviceBuffer source = upload(values);
  auto halves = context_->allocate(static_cast<int64_t>(values.size() * 2), "f16 cache");
  auto floats = context_->allocate(static_cast<int64_t>(values.size() * 4), "f32 cache");
  ASSERT_TRUE(halves.ok() && floats.ok());
  const auto n = static_cast<int64_t>(values.size());
  cuda::DeviceBuffer position_zero = upload(std::vector<int32_t>{0});
  const int32_t* zero = position_zero.as<int32_t>();
  ASSERT_TRUE(cuda::store_kv(*context_, source.as<float>(), halves->data(), n, zero, 1, DType::F16).ok());
  ASSERT_TRUE(cuda::store_kv(*context_, source.as<float>(), floats->data(), n, zero, 1, DType::F32).ok());
  EXPECT_EQ(download<uint16_t>(*halves, values.size()), expected);
  EXPECT_EQ(download<float>(*floats, values.size()), values);
  EXPECT_FALSE(cuda::store_kv(*context_, source.as<float>(), floats->data(), n, zero, 1, DType::BF16).ok());

  // Rows 0, 1, 2 of width 5 at positions 4, 0, 2 of a 5-row cache; rows 1 and 3 stay as they were.
  const int64_t width = 5;
  const std::vector<int32_t> positions = {4, 0, 2};
  cuda::DeviceBuffer where = upload(positions);
  auto rows = context_->allocate(5 * width * 4, "5-row cache");
  ASSERT_TRUE(rows.ok());
  ASSERT_TRUE(context_->zero(rows->data(), 5 * width * 4).ok());
  ASSERT_TRUE(cuda::store_kv(*context_, source.as<float>(), rows->data(), width, where.as<int32_t>(), 3, DType::F32).ok());
  std::vector<float> placed(static_cast<size_t>(5 * width), 0.0f);
  for (size_t r = 0; r < positions.size(); ++r)
    std::copy_n(values.begin() + static_cast<std::ptrdiff_t>(r * width), width,
                placed.begin() + positions[r] * width);
  EXPECT_EQ(download<float>(*rows, placed.size()), placed);

  // Keys and values in one launch, each to its own cache.
  std::vector<float> other(values.size());
  std::transform(values.begin(), values.end(), other.begin(), [](float v) { return -2.0f * v; });
  cuda::DeviceBuffer value_source = upload(other);
  auto value_rows = context_->allocate(5 * width * 4, "5-row value cache");
  ASSERT_TRUE(value_rows.ok());
  ASSERT_TRUE(context_->zero(rows->data(), 5 * width * 4).ok());
  ASSERT_TRUE(context_->zero(value_rows->data(), 5 * width * 4).ok());
  ASSERT_TRUE(cuda::store_kv(*context_, source.as<float>(), rows->data(), width, where.as<int32_t>(), 3, DType::F32,
                             value_source.as<float>(), value_rows->data()).ok());
  std::vector<float> placed_values(placed.size(), 0.0f);
  for (size_t r = 0; r < positions.size(); ++r)
    std::copy_n(other.begin() + static_cast<std::ptrdiff_t>(r * width), width,
                placed_values.begin() + positions[r] * width);
  EXPECT_EQ(download<float>(*rows, placed.size()), placed);
  EXPECT_EQ(download<float>(*value_rows, placed_values.size()), placed_values);
}

TEST_F(CudaTest, GatherAndWeightedScatterMoveTheRightRows) {
  const int64_t rows = 6, cols = 40;
  const std::vector<float> source = random_floats(static_cast<size_t>(rows * cols), 8);
  const std::vector<int32_t> picked = {4, 1, 5};
  const std::vector<float> weights = {0.5f, -2.0f, 1.5f};
  std::vector<float> expected(source);
  for (size_t i = 0; i < picked.size(); ++i)
    for (int64_t c = 0; c < cols; ++c)
      expected[static_cast<size_t>(picked[i] * cols + c)] +=
          weights[i] * source[static_cast<size_t>(picked[i] * cols + c)];
  cuda::DeviceBuffer src = upload(source), index = upload(picked), weight = upload(weights);
  auto gathered = context_->allocate(static_cast<int64_t>(picked.size()) * cols * 4, "gathered");
  ASSERT_TRUE(gathered.ok());
  ASSERT_TRUE(cuda::gather_rows(*context_, src.as<float>(), cols, index.as<int32_t>(), 3, gathered->as<float>()).ok());
  ASSERT_TRUE(cuda::scatter_add_rows(*context_, gathered->as<float>(), cols, index.as<int32_t>(),
                                     weight.as<float>(), 3, src.as<float>()).ok());
  expect_close(download<float>(src, source.size()), expected, 1e-6f, "gather + scatter_add");
}

// --- router ---------------------------------------------------------------------------------

struct RouterCase {
  const char* name;
  Gating gating;
  int64_t experts;
  int64_t k;
  bool normalize;
  bool bias;
  float scale;
};

void PrintTo(const RouterCase& c, std::ostream* out) { *out << c.name; }

class CudaRouter : public CudaTest, public ::testing::WithParamInterface<RouterCase> {};

TEST_P(CudaRouter, SelectsWhatTheCpuSelects) {
  const RouterCase c = GetParam();
  const int64_t tokens = 37;
  ModelConfig config;
  config.n_experts = c.experts;
  config.gating = c.gating;
  config.norm_topk_prob = c.normalize;
  config.routed_scaling_factor = c.scale;
  const std::vector<float> logits = random_floats(static_cast<size_t>(tokens * c.experts), 9, 2.0f);
  const std::vector<float> bias = random_floats(static_cast<size_t>(c.experts), 10, 0.1f);
  Routing expected;
  select_experts(config, logits.data(), tokens, c.k, nullptr, expected, c.bias ? bias.data() : nullptr);

  cuda::DeviceBuffer device_logits = upload(logits), device_bias = upload(bias);
  auto experts = context_->allocate(tokens * c.k * 4, "experts");
  auto weights = context_->allocate(tokens * c.k * 4, "weights");
  ASSERT_TRUE(experts.ok() && weights.ok());
  cuda::RouterArgs args;
  args.logits = device_logits.as<float>();
  args.selection_bias = c.bias ? device_bias.as<float>() : nullptr;
  args.n_tokens = tokens;
  args.n_experts = c.experts;
  args.k = c.k;
  args.score = c.gating == Gating::Softmax   ? cuda::RouterScore::Softmax
               : c.gating == Gating::Sigmoid ? cuda::RouterScore::Sigmoid
                                             : cuda::RouterScore::SoftmaxOfTopK;
  args.normalize = c.normalize;
  args.scale = c.scale;
  args.experts = experts->as<int32_t>();
  args.weights = weights->as<float>();
  ASSERT_TRUE(cuda::router_top_k(*context_, args).ok());
  EXPECT_EQ(download<int32_t>(*experts, expected.experts.size()), expected.experts);
  expect_close(download<float>(*weights, expected.weights.size()), expected.weights, 1e-5f, c.name);
}

INSTANTIATE_TEST_SUITE_P(
    Gatings, CudaRouter,
    ::testing::Values(RouterCase{"mixtral softmax 8 top-2", Gating::Softmax, 8, 2, true, false, 1.0f},
                      RouterCase{"softmax 60 top-4 unnormalized", Gating::Softmax, 60, 4, false, false, 1.0f},
                      RouterCase{"qwen3 softmax 128 top-8", Gating::Softmax, 128, 8, true, false, 1.0f},
                      RouterCase{"sigmoid 256 top-8 biased scaled", Gating::Sigmoid, 256, 8, true, true, 2.5f},
                      RouterCase{"gpt-oss softmax of top-4 of 32", Gating::SoftmaxTopk, 32, 4, false, false, 1.0f}));

// --- attention ------------------------------------------------------------------------------

struct AttentionCase {
  const char* name;
  int64_t tokens, first_position, heads, kv_heads, head_dim, window;
  bool sinks;
  DType kv_type = DType::F32;
};

void PrintTo(const AttentionCase& c, std::ostream* out) { *out << c.name; }

class CudaAttention : public CudaTest, public ::testing::WithParamInterface<AttentionCase> {};

TEST_P(CudaAttention, MatchesCpuReference) {
  const AttentionCase c = GetParam();
  const int64_t positions = c.first_position + c.tokens, D = c.head_dim;
  const int64_t group = c.heads / c.kv_heads;
  const std::vector<float> queries = random_floats(static_cast<size_t>(c.tokens * c.heads * D), 21);
  const std::vector<float> keys = random_floats(static_cast<size_t>(positions * c.kv_heads * D), 22);
  const std::vector<float> values = random_floats(static_cast<size_t>(positions * c.kv_heads * D), 23);
  const std::vector<float> sinks = random_floats(static_cast<size_t>(c.heads), 24);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));

  KvCache cache(1, KvCache::Gqa{c.kv_heads, D, c.kv_type}, positions);  // the CPU reference's layout
  cache.reserve(positions);
  for (int64_t j = 0; j < positions; ++j) {
    cache.store_key(0, j, keys.data() + j * c.kv_heads * D);
    cache.store_value(0, j, values.data() + j * c.kv_heads * D);
  }

  std::vector<float> expected(queries.size());
  std::vector<int64_t> first(static_cast<size_t>(c.tokens)), last(static_cast<size_t>(c.tokens));
  for (int64_t t = 0; t < c.tokens; ++t) {
    last[static_cast<size_t>(t)] = c.first_position + t;
    first[static_cast<size_t>(t)] = c.window > 0 ? std::max<int64_t>(0, c.first_position + t - c.window + 1) : 0;
  }
  for (int64_t kv = 0; kv < c.kv_heads; ++kv) {
    cpu::AttentionHeadArgs args;
    args.queries = queries.data() + kv * group * D;
    args.row_stride = c.heads * D;
    args.n_rows = c.tokens;
    args.group = group;
    args.head_dim = D;
    args.scale = scale;
    cache.bind_head(0, kv, args);
    args.first = first.data();
    args.last = last.data();
    args.sinks = c.sinks ? sinks.data() + kv * group : nullptr;
    args.output = expected.data() + kv * group * D;
    args.output_stride = c.heads * D;
    cpu::attention_head_reference(args);
  }

  // An f16 cache holds the values rounded as the CPU's KvCache rounds them.
  auto stored = [&](const std::vector<float>& x) {
    if (c.kv_type == DType::F32) return upload(x);
    std::vector<uint16_t> halves(x.size());
    for (size_t i = 0; i < x.size(); ++i) halves[i] = quant::fp32_to_fp16(x[i]);
    return upload(halves);
  };
  cuda::DeviceBuffer q = upload(queries), k = stored(keys), v = stored(values), s = upload(sinks);
  auto out = context_->allocate(static_cast<int64_t>(queries.size() * 4), "attention output");
  ASSERT_TRUE(out.ok());
  cuda::AttentionArgs args;
  args.queries = q.as<float>();
  args.keys = k.data();
  args.values = v.data();
  args.kv_type = c.kv_type;
  args.sinks = c.sinks ? s.as<float>() : nullptr;
  args.output = out->as<float>();
  args.n_tokens = c.tokens;
  args.n_heads = c.heads;
  args.n_kv_heads = c.kv_heads;
  args.head_dim = D;
  args.first_position = c.first_position;
  args.window = c.window;
  args.scale = scale;
  const Status status = cuda::attention(*context_, args);
  ASSERT_TRUE(status.ok()) << status.message();
  expect_close(download<float>(*out, queries.size()), expected, 1e-4f, c.name);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaAttention,
    ::testing::Values(AttentionCase{"decode at 700 (3 splits) gqa 8/2 d64", 1, 700, 8, 2, 64, 0, false},
                      AttentionCase{"prefill 40 mha d128", 40, 0, 4, 4, 128, 0, false},
                      AttentionCase{"chunk 9 at 300 gqa 4/1 d80", 9, 300, 4, 1, 80, 0, false},
                      AttentionCase{"sliding window 16 with sinks d64", 24, 500, 8, 2, 64, 16, true},
                      AttentionCase{"tiny-mixtral shape d32", 5, 10, 8, 4, 32, 0, false},
                      AttentionCase{"f16 cache, decode at 700 gqa 8/2 d64", 1, 700, 8, 2, 64, 0, false, DType::F16},
                      AttentionCase{"f16 cache, window 16 with sinks", 24, 500, 8, 2, 64, 16, true, DType::F16},
                      // MLA as multi-query attention over [latent 512 | rotary key 64] rows
                      AttentionCase{"mla decode at 300 mqa 16/1 d576", 1, 300, 16, 1, 576, 0, false},
                      AttentionCase{"mla prefill 6 mqa 4/1 d576, f16", 6, 0, 4, 1, 576, 0, false, DType::F16}));

TEST(CudaAttentionArguments, RejectsHeadDimAboveTheKernelLimit) {
  if (!cuda::available().ok()) GTEST_SKIP() << "skipped, no usable CUDA device: " << cuda::available().message();
  auto context = cuda::Context::create(0, 0);
  ASSERT_TRUE(context.ok());
  cuda::AttentionArgs args;
  args.n_tokens = 1;
  args.n_heads = args.n_kv_heads = 1;
  args.head_dim = 640;
  const Status status = cuda::attention(**context, args);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("head dim 640"), std::string::npos) << status.message();
}

}  // namespace
}  // namespace moenav
