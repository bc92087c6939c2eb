// The routed experts' kernels against the CPU (label gpu; each test skips without a device).
//   Selected experts (decode routed on the device): f32 weights, so that the CPU multiplies the
//   same values; |error| <= 1e-5 relative to the largest output.
//   Grouped experts (prefill): every weight format against a double reference that rounds what
//   the kernels round to bf16 (the input rows, the dequantized weights, the activations);
//   |error| <= 1e-3 relative (f32 accumulation; an activation whose bf16 rounding flips between
//   the two moves its product by 2^-8).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "backend/cuda.h"
#include "backend/cuda_ops.h"
#include "core/thread_pool.h"
#include "layers/ffn.h"
#include "ops/cuda_test_support.h"
#include "quant/quant.h"

namespace moenav {
namespace {

// Random f32 biases of n_experts experts (gate and up [ffn], down [hidden]) on the host and on
// the device, with the device tables of ExpertTables.
struct ExpertBiases {
  std::vector<std::vector<float>> host[3];  // gate, up, down; per expert
  std::vector<cuda::DeviceBuffer> device;
  cuda::DeviceBuffer tables[3];
  const float* const* table(int projection) const { return tables[projection].as<const float* const>(); }
  const float* at(int projection, int64_t expert, int64_t i) const {
    return host[projection][static_cast<size_t>(expert)].data() + i;
  }
};

template <typename Upload>
ExpertBiases random_biases(int64_t n_experts, int64_t hidden, int64_t ffn, Upload&& upload) {
  ExpertBiases b;
  for (int projection = 0; projection < 3; ++projection) {
    std::vector<const void*> pointers;
    for (int64_t e = 0; e < n_experts; ++e) {
      const int64_t n = projection == 2 ? hidden : ffn;
      b.host[projection].push_back(random_floats(static_cast<size_t>(n), static_cast<uint32_t>(70 + 10 * projection + e)));
      b.device.push_back(upload(b.host[projection].back()));
      pointers.push_back(b.device.back().data());
    }
    b.tables[projection] = upload(pointers);
  }
  return b;
}

// Three f32 experts of a 64-wide model, 96 wide, for 2 tokens with k = 2: each pair's expert
// through the tables, the activation in the gate/up kernel and the slot-order combine give the
// CPU's ffn_forward of each selected expert, weighted and summed (SwiGLU and the clamped one;
// the gate and up values, about 10 in size, often pass the clamp's limit of 7; without and with
// gpt-oss's expert biases). f32 weights, so
// that the CPU multiplies the same values (it quantizes the input for quantized weights); the
// formats' dequantization is matmul's, tested in test_cuda_ops.
TEST_F(CudaTest, SelectedExpertsMatchTheCpuFfn) {
  const int64_t hidden = 64, ffn = 96, n_experts = 3, tokens = 2, k = 2;
  const DType type = DType::F32;
  std::vector<std::vector<uint8_t>> bytes;  // per expert: gate, up, down
  std::vector<FfnWeights> host(static_cast<size_t>(n_experts));
  std::vector<cuda::DeviceBuffer> device;
  std::vector<const void*> tables[3];
  auto quantized = [&](int64_t rows, int64_t cols, uint32_t seed) {
    const std::vector<float> values = random_floats(static_cast<size_t>(rows * cols), seed, 0.6f);
    std::vector<uint8_t>& out = bytes.emplace_back(static_cast<size_t>(rows * dtype_bytes(type, cols)));
    for (int64_t r = 0; r < rows; ++r)
      quant::quantize_row(type, values.data() + r * cols, out.data() + r * dtype_bytes(type, cols), cols);
    device.push_back(upload(out));
    return TensorView{type, Shape{rows, cols}, out.data()};
  };
  for (int64_t e = 0; e < n_experts; ++e) {
    FfnWeights& f = host[static_cast<size_t>(e)];
    f.gate = quantized(ffn, hidden, static_cast<uint32_t>(30 + e));
    tables[0].push_back(device.back().data());
    f.up = quantized(ffn, hidden, static_cast<uint32_t>(40 + e));
    tables[1].push_back(device.back().data());
    f.down = quantized(hidden, ffn, static_cast<uint32_t>(50 + e));
    tables[2].push_back(device.back().data());
  }
  const std::vector<float> input = random_floats(static_cast<size_t>(tokens * hidden), 60, 2.0f);
  const std::vector<int32_t> selected = {2, 0, 1, 2};
  const std::vector<float> weights = {0.7f, 0.3f, 0.45f, 0.55f};
  cuda::DeviceBuffer gate_table = upload(tables[0]), up_table = upload(tables[1]), down_table = upload(tables[2]);
  cuda::DeviceBuffer x = upload(input), chosen = upload(selected), w = upload(weights);
  auto activated = context_->allocate(tokens * k * ffn * 4, "activations");
  auto pair_output = context_->allocate(tokens * k * hidden * 4, "pair outputs");
  auto output = context_->allocate(tokens * hidden * 4, "output");
  ASSERT_TRUE(activated.ok() && pair_output.ok() && output.ok());
  cuda::SelectedExperts experts;
  experts.tables.gate = {type, ffn, hidden, nullptr};
  experts.tables.up = experts.tables.gate;
  experts.tables.down = {type, hidden, ffn, nullptr};
  experts.tables.gate_data = gate_table.as<const void* const>();
  experts.tables.up_data = up_table.as<const void* const>();
  experts.tables.down_data = down_table.as<const void* const>();
  experts.selected = chosen.as<int32_t>();
  experts.n_pairs = tokens * k;
  experts.k = k;
  const ExpertBiases biases = random_biases(n_experts, hidden, ffn, [&](const auto& v) { return upload(v); });
  ThreadPool pool(1);
  for (int variant = 0; variant < 4; ++variant) {
    const bool clamped = (variant & 1) != 0, biased = (variant & 2) != 0;
    SCOPED_TRACE(std::string(clamped ? "clamped SwiGLU" : "SwiGLU") + (biased ? ", biased" : ""));
    for (int64_t e = 0; e < n_experts; ++e) {
      FfnWeights& f = host[static_cast<size_t>(e)];
      f.gate_bias = biased ? TensorView{DType::F32, Shape{ffn}, biases.at(0, e, 0)} : TensorView{};
      f.up_bias = biased ? TensorView{DType::F32, Shape{ffn}, biases.at(1, e, 0)} : TensorView{};
      f.down_bias = biased ? TensorView{DType::F32, Shape{hidden}, biases.at(2, e, 0)} : TensorView{};
    }
    experts.tables.gate_bias = biased ? biases.table(0) : nullptr;
    experts.tables.up_bias = biased ? biases.table(1) : nullptr;
    experts.tables.down_bias = biased ? biases.table(2) : nullptr;
    const Activation activation{clamped ? FfnActivation::ClampedSwiglu : FfnActivation::Swiglu, 1.702f, 7.0f};
    std::vector<float> expected(static_cast<size_t>(tokens * hidden), 0.0f), one(static_cast<size_t>(hidden));
    Workspace work;
    work.ffn_gate.resize(static_cast<size_t>(ffn));
    work.ffn_up.resize(static_cast<size_t>(ffn));
    for (int64_t pair = 0; pair < tokens * k; ++pair) {
      const FfnWeights& f = host[static_cast<size_t>(selected[static_cast<size_t>(pair)])];
      ffn_forward(f, input.data() + (pair / k) * hidden, 1, one.data(), work, pool, activation);
      for (int64_t i = 0; i < hidden; ++i)
        expected[static_cast<size_t>((pair / k) * hidden + i)] += weights[static_cast<size_t>(pair)] * one[static_cast<size_t>(i)];
    }
    const cuda::GluArgs glu{clamped, activation.alpha, activation.limit};
    ASSERT_TRUE(cuda::selected_gate_up(*context_, experts, x.as<float>(), glu, activated->as<float>()).ok());
    ASSERT_TRUE(cuda::selected_down(*context_, experts, activated->as<float>(), pair_output->as<float>()).ok());
    ASSERT_TRUE(cuda::combine_slots(*context_, pair_output->as<float>(), w.as<float>(), tokens, k, hidden,
                                    output->as<float>()).ok());
    expect_close(download<float>(*output, expected.size()), expected, 1e-5f, "selected experts");
  }
}

// --- grouped experts (prefill) -----------------------------------------------------------

struct GroupedCase {
  DType type;
  int64_t hidden, ffn;  // k-quants: whole super-blocks of 256
};

void PrintTo(const GroupedCase& c, std::ostream* out) {
  *out << dtype_name(c.type) << " hidden=" << c.hidden << " ffn=" << c.ffn;
}

class CudaGroupedExperts : public CudaTest, public ::testing::WithParamInterface<GroupedCase> {};

float bf16_round(float value) { return quant::bf16_to_fp32(quant::fp32_to_bf16(value)); }

float glu(float gate, float up, bool clamped) {
  if (!clamped) return gate / (1.0f + std::exp(-gate)) * up;
  const float g = std::min(gate, 7.0f), u = std::clamp(up, -7.0f, 7.0f);
  return (u + 1.0f) * (g / (1.0f + std::exp(-g * 1.702f)));
}

// 4 experts, 72 tokens with k = 2: expert 0 takes 68 pairs (two row tiles, the second of 4 rows),
// expert 1 none (an empty group), experts 2 and 3 the rest, one selection skipped. The pairs are
// sorted by expert as the decoder sorts them, gathered, multiplied group by group and combined
// in slot order through pair_rows; SwiGLU and the clamped one, without and with expert biases.
TEST_P(CudaGroupedExperts, MatchTheBf16Reference) {
  const GroupedCase c = GetParam();
  const int64_t n_experts = 4, tokens = 72, k = 2, hidden = c.hidden, ffn = c.ffn;
  struct Matrix {
    std::vector<uint8_t> bytes;
    std::vector<float> rounded;  // dequantized, then rounded to bf16
    cuda::DeviceBuffer device;
  };
  auto make = [&](int64_t rows, int64_t cols, uint32_t seed) {
    Matrix m;
    const int64_t row_bytes = dtype_bytes(c.type, cols);
    const std::vector<float> values = random_floats(static_cast<size_t>(rows * cols), seed, 0.08f);
    m.bytes.resize(static_cast<size_t>(rows * row_bytes));
    m.rounded.resize(values.size());
    for (int64_t r = 0; r < rows; ++r) {
      quant::quantize_row(c.type, values.data() + r * cols, m.bytes.data() + r * row_bytes, cols);
      quant::dequantize_row(c.type, m.bytes.data() + r * row_bytes, m.rounded.data() + r * cols, cols);
    }
    for (float& v : m.rounded) v = bf16_round(v);
    m.device = upload(m.bytes);
    return m;
  };
  std::vector<Matrix> gate, up, down;
  std::vector<const void*> tables[3];
  for (int64_t e = 0; e < n_experts; ++e) {
    gate.push_back(make(ffn, hidden, static_cast<uint32_t>(10 + e)));
    up.push_back(make(ffn, hidden, static_cast<uint32_t>(20 + e)));
    down.push_back(make(hidden, ffn, static_cast<uint32_t>(30 + e)));
    tables[0].push_back(gate.back().device.data());
    tables[1].push_back(up.back().device.data());
    tables[2].push_back(down.back().device.data());
  }
  std::vector<int32_t> selected(static_cast<size_t>(tokens * k));
  std::vector<float> weights(selected.size());
  for (int64_t t = 0; t < tokens; ++t) {
    selected[static_cast<size_t>(t * k)] = t < 68 ? 0 : 2;
    selected[static_cast<size_t>(t * k + 1)] = t == 5 ? -1 : t % 3 == 0 ? 3 : 2;
    weights[static_cast<size_t>(t * k)] = 0.6f + 0.003f * static_cast<float>(t);
    weights[static_cast<size_t>(t * k + 1)] = 0.4f - 0.003f * static_cast<float>(t);
  }
  // Sorted by expert: routes (the pair's token), sorted weights, pair_rows and the groups.
  std::vector<int32_t> routes, pair_rows(selected.size(), -1), group_experts, group_first = {0};
  std::vector<float> sorted_weights;
  for (int32_t e = 0; e < n_experts; ++e) {
    for (size_t p = 0; p < selected.size(); ++p) {
      if (selected[p] != e) continue;
      pair_rows[p] = static_cast<int32_t>(routes.size());
      routes.push_back(static_cast<int32_t>(p / k));
      sorted_weights.push_back(weights[p]);
    }
    group_experts.push_back(e);
    group_first.push_back(static_cast<int32_t>(routes.size()));
  }
  const int64_t pairs = static_cast<int64_t>(routes.size());
  ASSERT_EQ(pairs, tokens * k - 1);
  int64_t row_tiles = 0;
  for (int64_t g = 0; g < n_experts; ++g)
    row_tiles += cuda::grouped_row_tiles(group_first[static_cast<size_t>(g + 1)] - group_first[static_cast<size_t>(g)]);
  EXPECT_EQ(row_tiles, 2 + 0 + 1 + 1);

  const std::vector<float> input = random_floats(static_cast<size_t>(tokens * hidden), 40, 1.5f);
  cuda::DeviceBuffer x = upload(input), device_routes = upload(routes), device_pair_rows = upload(pair_rows);
  cuda::DeviceBuffer device_weights = upload(sorted_weights), device_group_experts = upload(group_experts);
  cuda::DeviceBuffer device_group_first = upload(group_first);
  cuda::DeviceBuffer gate_table = upload(tables[0]), up_table = upload(tables[1]), down_table = upload(tables[2]);
  auto pair_input = context_->allocate(pairs * hidden * 2, "pair input");
  auto activated = context_->allocate(pairs * ffn * 2, "activations");
  auto pair_output = context_->allocate(pairs * hidden * 4, "pair outputs");
  auto output = context_->allocate(tokens * hidden * 4, "output");
  ASSERT_TRUE(pair_input.ok() && activated.ok() && pair_output.ok() && output.ok());
  cuda::GroupedExperts experts;
  experts.tables.gate = {c.type, ffn, hidden, nullptr};
  experts.tables.up = experts.tables.gate;
  experts.tables.down = {c.type, hidden, ffn, nullptr};
  experts.tables.gate_data = gate_table.as<const void* const>();
  experts.tables.up_data = up_table.as<const void* const>();
  experts.tables.down_data = down_table.as<const void* const>();
  experts.group_experts = device_group_experts.as<int32_t>();
  experts.group_first = device_group_first.as<int32_t>();
  experts.n_groups = n_experts;
  experts.n_row_tiles = row_tiles;
  auto* input_rows = pair_input->as<uint16_t>();
  auto* activations = activated->as<uint16_t>();
  ASSERT_TRUE(cuda::gather_rows_bf16(*context_, x.as<float>(), hidden, device_routes.as<int32_t>(), pairs,
                                     input_rows).ok());
  const ExpertBiases biases = random_biases(n_experts, hidden, ffn, [&](const auto& v) { return upload(v); });
  for (int variant = 0; variant < 4; ++variant) {
    const bool clamped = (variant & 1) != 0, biased = (variant & 2) != 0;
    SCOPED_TRACE(std::string(clamped ? "clamped SwiGLU" : "SwiGLU") + (biased ? ", biased" : ""));
    experts.tables.gate_bias = biased ? biases.table(0) : nullptr;
    experts.tables.up_bias = biased ? biases.table(1) : nullptr;
    experts.tables.down_bias = biased ? biases.table(2) : nullptr;
    auto bias = [&](int projection, int64_t expert, int64_t i) { return biased ? *biases.at(projection, expert, i) : 0.0f; };
    std::vector<float> expected_pairs(static_cast<size_t>(pairs * hidden));
    std::vector<float> expected(static_cast<size_t>(tokens * hidden), 0.0f), a(static_cast<size_t>(ffn));
    for (int64_t p = 0; p < pairs; ++p) {
      const int64_t e = std::upper_bound(group_first.begin(), group_first.end(), p) - group_first.begin() - 1;
      const float* row = input.data() + routes[static_cast<size_t>(p)] * hidden;
      for (int64_t n = 0; n < ffn; ++n) {
        double g = 0.0, u = 0.0;
        for (int64_t i = 0; i < hidden; ++i) {
          const double xi = bf16_round(row[i]);
          g += xi * gate[static_cast<size_t>(e)].rounded[static_cast<size_t>(n * hidden + i)];
          u += xi * up[static_cast<size_t>(e)].rounded[static_cast<size_t>(n * hidden + i)];
        }
        const float gate_value = static_cast<float>(g) + bias(0, e, n), up_value = static_cast<float>(u) + bias(1, e, n);
        a[static_cast<size_t>(n)] = bf16_round(glu(gate_value, up_value, clamped));
      }
      for (int64_t h = 0; h < hidden; ++h) {
        double sum = 0.0;
        for (int64_t n = 0; n < ffn; ++n)
          sum += static_cast<double>(a[static_cast<size_t>(n)]) * down[static_cast<size_t>(e)].rounded[static_cast<size_t>(h * ffn + n)];
        expected_pairs[static_cast<size_t>(p * hidden + h)] = static_cast<float>(sum) + bias(2, e, h);
      }
    }
    for (size_t q = 0; q < selected.size(); ++q) {
      if (pair_rows[q] < 0) continue;
      const int64_t t = static_cast<int64_t>(q) / k;
      for (int64_t h = 0; h < hidden; ++h)
        expected[static_cast<size_t>(t * hidden + h)] +=
            weights[q] * expected_pairs[static_cast<size_t>(pair_rows[q] * hidden + h)];
    }
    const cuda::GluArgs args{clamped, 1.702f, 7.0f};
    ASSERT_TRUE(cuda::grouped_gate_up(*context_, experts, input_rows, args, activations).ok());
    ASSERT_TRUE(cuda::grouped_down(*context_, experts, activations, pair_output->as<float>()).ok());
    ASSERT_TRUE(cuda::combine_slots(*context_, pair_output->as<float>(), device_weights.as<float>(), tokens, k,
                                    hidden, output->as<float>(), device_pair_rows.as<int32_t>()).ok());
    expect_close(download<float>(*pair_output, expected_pairs.size()), expected_pairs, 1e-3f, "pair outputs");
    expect_close(download<float>(*output, expected.size()), expected, 1e-3f, "combined output");
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, CudaGroupedExperts,
                         ::testing::Values(GroupedCase{DType::F32, 288, 96}, GroupedCase{DType::F16, 288, 96},
                                           GroupedCase{DType::BF16, 288, 96}, GroupedCase{DType::Q8_0, 288, 96},
                                           GroupedCase{DType::Q4_0, 288, 96}, GroupedCase{DType::Q4_K, 256, 256},
                                           GroupedCase{DType::Q5_K, 256, 256}, GroupedCase{DType::Q6_K, 256, 256}));

TEST_F(CudaTest, GroupedExpertsRejectWhatTheyCannotMultiply) {
  cuda::GroupedExperts experts;
  experts.tables.gate = {DType::Q4_0, 96, 288, nullptr};
  experts.tables.up = {DType::Q8_0, 96, 288, nullptr};
  experts.tables.down = {DType::Q4_0, 288, 96, nullptr};
  experts.n_groups = 1;
  experts.n_row_tiles = 1;
  const Status mixed = cuda::grouped_gate_up(*context_, experts, nullptr, cuda::GluArgs{}, nullptr);
  ASSERT_FALSE(mixed.ok());
  EXPECT_NE(mixed.message().find("up projection"), std::string::npos) << mixed.message();
  experts.tables.down = {DType::F32, 288, 48, nullptr};
  const Status ragged = cuda::grouped_down(*context_, experts, nullptr, nullptr);
  ASSERT_FALSE(ragged.ok());
  EXPECT_NE(ragged.message().find("48 elements"), std::string::npos) << ragged.message();
  experts.tables.down = {DType::Q4_0, 288, 96, nullptr};
  experts.n_row_tiles = 70000;
  const Status too_many = cuda::grouped_down(*context_, experts, nullptr, nullptr);
  ASSERT_FALSE(too_many.ok());
  EXPECT_NE(too_many.message().find("70000 row tiles"), std::string::npos) << too_many.message();
}

}  // namespace
}  // namespace moenav
