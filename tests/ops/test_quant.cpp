// Reference (de)quantization: conversions, per-format round-trip error bounds, and the fixed-point
// property quantize(dequantize(q)) == q byte for byte, which is what lets a dequantized llama.cpp
// tensor re-quantize to the original blocks (test_quant_gguf.cpp checks that on a real file).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "quant/blocks.h"
#include "quant/quant.h"

namespace moenav {
namespace {

using quant::bf16_to_fp32;
using quant::fp16_to_fp32;
using quant::fp32_to_bf16;
using quant::fp32_to_fp16;

// --- fp16 / bf16 ------------------------------------------------------------------------------

// Round-to-nearest-even of a float to a format with `mantissa_bits` kept bits, computed from the
// two neighbouring candidates in double precision: an independent check of the bit tricks.
template <typename Decode>
uint16_t nearest_of(float value, uint16_t lower, Decode decode) {
  const double exact = value;
  const double low = decode(lower), high = decode(static_cast<uint16_t>(lower + 1));
  const double below = std::fabs(exact - low), above = std::fabs(high - exact);
  if (below < above) return lower;
  if (above < below) return static_cast<uint16_t>(lower + 1);
  return (lower & 1) ? static_cast<uint16_t>(lower + 1) : lower;
}

TEST(Fp16, EveryHalfRoundTrips) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const uint16_t half = static_cast<uint16_t>(bits);
    const float value = fp16_to_fp32(half);
    if (std::isnan(value)) {
      EXPECT_TRUE(std::isnan(fp16_to_fp32(fp32_to_fp16(value)))) << std::hex << bits;
      continue;
    }
    ASSERT_EQ(fp32_to_fp16(value), half) << std::hex << bits;
  }
  EXPECT_EQ(fp16_to_fp32(0x3C00), 1.0f);
  EXPECT_EQ(fp16_to_fp32(0x0001), 0x1p-24f);
  EXPECT_EQ(fp16_to_fp32(0x7BFF), 65504.0f);
}

TEST(Fp16, RoundsToNearestEven) {
  EXPECT_EQ(fp32_to_fp16(1.0f + 0x1p-11f), 0x3C00);      // tie -> even (down)
  EXPECT_EQ(fp32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3C02);  // tie -> even (up)
  EXPECT_EQ(fp32_to_fp16(65519.0f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00);  // rounds to inf
  EXPECT_EQ(fp32_to_fp16(0x1p-25f), 0x0000);  // tie between 0 and 2^-24
  EXPECT_EQ(fp32_to_fp16(0x1.8p-25f), 0x0001);
  EXPECT_EQ(fp32_to_fp16(-INFINITY), 0xFC00);
  std::mt19937 rng(7);
  for (int i = 0; i < 2'000'000; ++i) {
    // Random floats across the half range (2^-26 .. 2^16), both signs.
    uint32_t bits = rng();
    bits = (bits & 0x807FFFFF) | ((101u + bits % 42u) << 23);
    const float value = std::bit_cast<float>(bits);
    const float magnitude = std::fabs(value);
    const uint16_t got = fp32_to_fp16(value);
    if (magnitude >= 65520.0f) {
      ASSERT_EQ(got & 0x7FFF, 0x7C00) << value;
      continue;
    }
    // Largest half not above |value|, found by truncating the exact conversion.
    uint16_t lower = static_cast<uint16_t>(got & 0x7FFF);
    if (fp16_to_fp32(lower) > magnitude) --lower;
    const uint16_t expected =
        nearest_of(magnitude, lower, [](uint16_t h) { return double{fp16_to_fp32(h)}; });
    ASSERT_EQ(got & 0x7FFF, expected) << value;
    ASSERT_EQ(got >> 15, bits >> 31) << value;
  }
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(fp32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x3F808000u)), 0x3F80);  // tie -> even
  EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x3F818000u)), 0x3F82);  // tie -> even
  EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x7F7FFFFFu)), 0x7F80);  // FLT_MAX -> inf
  EXPECT_EQ(fp32_to_bf16(NAN), 0x7FC0);
  EXPECT_EQ(bf16_to_fp32(0x3F80), 1.0f);
  std::mt19937 rng(11);
  for (int i = 0; i < 2'000'000; ++i) {
    const uint32_t bits = rng() & 0xFF7FFFFFu;  // exponent < 255: finite
    const float value = std::bit_cast<float>(bits);
    const uint16_t got = fp32_to_bf16(value);
    const uint16_t truncated = static_cast<uint16_t>((bits >> 16) & 0x7FFF);
    if ((truncated & 0x7F80) == 0x7F00 && got == (((bits >> 16) & 0x8000) | 0x7F80))
      continue;  // to inf
    const uint16_t expected =
        nearest_of(std::fabs(value), truncated, [](uint16_t h) { return double{bf16_to_fp32(h)}; });
    ASSERT_EQ(got & 0x7FFF, expected) << std::hex << bits;
  }
}

// --- Formats ----------------------------------------------------------------------------------

struct FormatBound {
  DType type;
  double max_nmse;  // on N(0, 1) data, rows of 4096 (measured values in comments)
};

// NMSE = sum (x - x')^2 / sum x^2 over the row. Bounds sit ~1.5x above the measured values, so a
// broken scale search or packing shows up while rounding differences do not.
constexpr FormatBound kBounds[] = {
    {DType::F32, 0.0},     {DType::F16, 1e-7},  {DType::BF16, 5e-6},   {DType::Q8_0, 4e-5},
    {DType::Q4_0, 1.2e-2}, {DType::Q8_K, 7e-5}, {DType::Q6_K, 1.5e-3}, {DType::Q5_K, 2.5e-3},
    {DType::Q4_K, 1e-2},   {DType::Q3_K, 4e-2}, {DType::Q2_K, 1.3e-1},
};

std::vector<float> gaussian(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(static_cast<size_t>(n));
  for (float& v : values) v = normal(rng);
  return values;
}

std::vector<uint8_t> quantize(DType type, const std::vector<float>& values) {
  const int64_t n = static_cast<int64_t>(values.size());
  std::vector<uint8_t> bytes(static_cast<size_t>(dtype_bytes(type, n)));
  quant::quantize_row(type, values.data(), bytes.data(), n);
  return bytes;
}

std::vector<float> dequantize(DType type, const std::vector<uint8_t>& bytes, int64_t n) {
  std::vector<float> values(static_cast<size_t>(n));
  quant::dequantize_row(type, bytes.data(), values.data(), n);
  return values;
}

TEST(Quant, RoundTripErrorWithinFormatBound) {
  constexpr int64_t n = 4096;
  for (const FormatBound& bound : kBounds) {
    double error = 0, signal = 0;
    for (uint32_t seed = 1; seed <= 8; ++seed) {
      const std::vector<float> x = gaussian(n, seed);
      const std::vector<float> y = dequantize(bound.type, quantize(bound.type, x), n);
      for (int64_t i = 0; i < n; ++i) {
        error += double(x[i] - y[i]) * (x[i] - y[i]);
        signal += double{x[i]} * x[i];
      }
    }
    const double nmse = error / signal;
    std::printf("%-5s NMSE %.3e (bound %.1e)\n", std::string(dtype_name(bound.type)).c_str(), nmse,
                bound.max_nmse);
    EXPECT_LE(nmse, bound.max_nmse) << dtype_name(bound.type);
  }
}

// Per-element bounds where the format makes one exact: Q8_0 and Q8_K round to the nearest level
// (|error| <= d/2, plus the fp16 rounding of Q8_0's d times 127); Q4_0 may clip the side
// opposite its extreme value by one level (|error| <= |d|).
TEST(Quant, BlockFormatsMaxErrorVersusScale) {
  const std::vector<float> x = gaussian(4096, 3);
  {
    const auto bytes = quantize(DType::Q8_0, x);
    const auto y = dequantize(DType::Q8_0, bytes, 4096);
    const auto* blocks = reinterpret_cast<const quant::BlockQ8_0*>(bytes.data());
    for (int64_t i = 0; i < 4096; ++i) {
      const float d = fp16_to_fp32(blocks[i / 32].d);
      ASSERT_LE(std::fabs(x[i] - y[i]), 0.5f * d + 127 * d * 0x1p-11f) << i;
    }
  }
  {
    const auto bytes = quantize(DType::Q4_0, x);
    const auto y = dequantize(DType::Q4_0, bytes, 4096);
    const auto* blocks = reinterpret_cast<const quant::BlockQ4_0*>(bytes.data());
    for (int64_t i = 0; i < 4096; ++i) {
      const float d = std::fabs(fp16_to_fp32(blocks[i / 32].d));
      ASSERT_LE(std::fabs(x[i] - y[i]), d * (1.0f + 8 * 0x1p-11f)) << i;
    }
  }
  {
    const auto bytes = quantize(DType::Q8_K, x);
    const auto y = dequantize(DType::Q8_K, bytes, 4096);
    const auto* blocks = reinterpret_cast<const quant::BlockQ8_K*>(bytes.data());
    for (int64_t i = 0; i < 4096; ++i) {
      const float d = std::fabs(blocks[i / 256].d);
      ASSERT_LE(std::fabs(x[i] - y[i]), 0.5f * d * (1 + 1e-5f)) << i;
    }
    for (int b = 0; b < 16; ++b) {
      for (int j = 0; j < 16; ++j) {
        int sum = 0;
        for (int i = 0; i < 16; ++i) sum += blocks[b].qs[16 * j + i];
        ASSERT_EQ(blocks[b].bsums[j], sum);
      }
    }
  }
}

// Data that exercises the corners of the scale searches: all zero, constant, one outlier, all
// positive (min clamps to 0), tiny and huge magnitudes, and plain noise.
std::vector<std::vector<float>> fixed_point_inputs(int64_t n) {
  std::vector<std::vector<float>> inputs;
  for (uint32_t seed = 1; seed <= 6; ++seed) inputs.push_back(gaussian(n, seed));
  std::vector<float> mixed = gaussian(n, 99);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t block = i / 256;
    switch (block % 6) {
      case 0:
        mixed[i] = 0.0f;
        break;
      case 1:
        mixed[i] = 0.75f;
        break;
      case 2:
        mixed[i] = (i % 256 == 17) ? 40.0f : mixed[i] * 0.01f;
        break;
      case 3:
        mixed[i] = std::fabs(mixed[i]) + 0.5f;
        break;
      case 4:
        mixed[i] *= 1e-3f;
        break;
      default:
        mixed[i] *= 300.0f;
        break;
    }
  }
  inputs.push_back(mixed);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> flat(static_cast<size_t>(n));
  for (float& v : flat) v = uniform(rng);
  inputs.push_back(flat);
  return inputs;
}

// Byte-for-byte fixed point: F32, F16, BF16, Q8_0 and Q4_0. Their ggml quantizers are
// projections (the extreme value of a block maps to the extreme level, so the scale is recovered
// exactly from dequantized data).
TEST(Quant, QuantizeOfDequantizeIsFixedPoint) {
  constexpr int64_t n = 256 * 24;
  for (DType type : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0}) {
    int input_index = 0;
    for (const std::vector<float>& x : fixed_point_inputs(n)) {
      const std::vector<uint8_t> q = quantize(type, x);
      const std::vector<uint8_t> again = quantize(type, dequantize(type, q, n));
      const int64_t block_bytes = dtype_traits(type).block_bytes;
      int64_t mismatched_blocks = 0, first = -1;
      for (size_t i = 0; i < q.size(); i += static_cast<size_t>(block_bytes)) {
        if (std::memcmp(q.data() + i, again.data() + i, static_cast<size_t>(block_bytes)) != 0) {
          if (first < 0) first = static_cast<int64_t>(i) / block_bytes;
          ++mismatched_blocks;
        }
      }
      EXPECT_EQ(mismatched_blocks, 0)
          << dtype_name(type) << " input " << input_index << ": first differing block " << first
          << " of " << q.size() / block_bytes;
      ++input_index;
    }
  }
}

// The k-quants are NOT byte-for-byte fixed points under ggml's reference quantizers, and we keep
// those quantizers bit-exact (llama.cpp compatibility wins): the scale search re-fits the
// dequantized grid and may land one 6-bit scale step or one fp16 ulp away. What holds, and is
// asserted: re-quantizing dequantized data changes the values by far less than the format's own
// error (NMSE between the two dequantizations <= 1/20 of the round-trip bound), and most
// super-blocks come back identical. Q8_K's float scale may move by an ulp.
TEST(Quant, KQuantRequantizationIsStable) {
  constexpr int64_t n = 256 * 24;
  for (const FormatBound& bound : kBounds) {
    if (!is_quantized(bound.type) || bound.type == DType::Q8_0 || bound.type == DType::Q4_0)
      continue;
    int64_t identical = 0, total = 0;
    double drift = 0, signal = 0;
    for (const std::vector<float>& x : fixed_point_inputs(n)) {
      const std::vector<uint8_t> q = quantize(bound.type, x);
      const std::vector<float> y = dequantize(bound.type, q, n);
      const std::vector<uint8_t> again = quantize(bound.type, y);
      const std::vector<float> y_again = dequantize(bound.type, again, n);
      const int64_t block_bytes = dtype_traits(bound.type).block_bytes;
      for (size_t i = 0; i < q.size(); i += static_cast<size_t>(block_bytes)) {
        identical +=
            std::memcmp(q.data() + i, again.data() + i, static_cast<size_t>(block_bytes)) == 0;
        ++total;
      }
      for (int64_t i = 0; i < n; ++i) {
        drift += double(y[i] - y_again[i]) * (y[i] - y_again[i]);
        signal += double{y[i]} * y[i];
      }
    }
    const double fraction = double(identical) / double(total);
    std::printf("%-5s requantized: %.1f%% blocks identical, value NMSE %.2e\n",
                std::string(dtype_name(bound.type)).c_str(), 100 * fraction, drift / signal);
    EXPECT_LE(drift / signal, bound.max_nmse / 20) << dtype_name(bound.type);
    EXPECT_GE(fraction, 0.5) << dtype_name(bound.type);
  }
}

TEST(Quant, TableCoversWeightFormats) {
  for (DType type : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K,
                     DType::Q5_K, DType::Q6_K, DType::Q2_K, DType::Q3_K}) {
    EXPECT_TRUE(quant::can_quantize(type)) << dtype_name(type);
    EXPECT_TRUE(quant::can_dequantize(type)) << dtype_name(type);
  }
  EXPECT_FALSE(quant::can_quantize(DType::Q8_K));
  EXPECT_TRUE(quant::can_dequantize(DType::Q8_K));
  EXPECT_FALSE(quant::can_quantize(DType::I32));
  EXPECT_EQ(quant::activation_type_for(DType::Q4_0), DType::Q8_0);
  EXPECT_EQ(quant::activation_type_for(DType::Q6_K), DType::Q8_K);
  EXPECT_EQ(quant::activation_type_for(DType::BF16), DType::F32);
}

}  // namespace
}  // namespace moenav
