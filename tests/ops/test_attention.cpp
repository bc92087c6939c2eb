// The blocked attention kernel on every instruction set against the plain reference (two-pass
// softmax, double sums): one table of cases (decode, prefill chunks, GQA groups, sliding windows,
// sinks, head sizes that do not fill a vector), error as NMSE.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/attention.h"
#include "layers/kv_cache.h"

namespace moenav::cpu {
namespace {

struct AttentionCase {
  const char* name;
  int64_t n_rows;      // query rows, at positions [start, start + n_rows)
  int64_t start;
  int64_t group;
  int64_t head_dim;
  int64_t window;      // 0 = full causal
  bool sinks;
};

const AttentionCase kCases[] = {
    {"decode_first_token", 1, 0, 4, 32, 0, false},
    {"decode_long_context", 1, 700, 4, 32, 0, false},
    {"prefill_chunk", 150, 0, 4, 32, 0, false},
    {"prefill_after_cache", 37, 300, 2, 64, 0, false},
    {"mha_head_dim_128", 9, 70, 1, 128, 0, false},
    {"odd_head_dim", 20, 50, 3, 40, 0, false},
    {"sliding_window", 90, 100, 4, 32, 33, false},
    {"sinks", 70, 10, 4, 64, 0, true},
    {"sinks_and_window", 40, 200, 2, 64, 128, true},
};

double nmse(const std::vector<float>& got, const std::vector<float>& want) {
  double error = 0.0, energy = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    error += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    energy += static_cast<double>(want[i]) * want[i];
  }
  return error / std::max(energy, 1e-30);
}

// The kernel reads the cache's layout (KvCache::store_key / store_value) in f32 and f16; the
// reference reads the same elements, so the two differ only in the order of float sums.
TEST(Attention, EveryIsaMatchesReference) {
  std::mt19937 random(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (DType type : {DType::F32, DType::F16}) {
    for (const AttentionCase& c : kCases) {
      const int64_t n_positions = c.start + c.n_rows;
      // The second of three KV heads. Positions past the last row's (a later chunk's, still in
      // the last key block) hold huge values: they must be masked.
      constexpr int64_t kKvHeads = 3;
      const int64_t kv_dim = kKvHeads * c.head_dim;
      const int64_t cached = n_positions + 20;
      KvCache cache(1, KvCache::Gqa{kKvHeads, c.head_dim, type}, cached);
      cache.reserve(cached);
      std::vector<float> row(static_cast<size_t>(kv_dim));
      for (int64_t j = 0; j < cached; ++j) {
        for (float& x : row) x = j < n_positions ? normal(random) : 6e4f;
        cache.store_key(0, j, row.data());
        for (float& x : row) x = j < n_positions ? normal(random) : 6e4f;
        cache.store_value(0, j, row.data());
      }
      const int64_t row_stride = c.group * c.head_dim + 16;
      std::vector<float> queries(static_cast<size_t>(c.n_rows * row_stride));
      for (float& x : queries) x = 2.0f * normal(random);  // peaked softmax
      std::vector<float> sinks(static_cast<size_t>(c.group));
      for (float& x : sinks) x = normal(random);
      std::vector<int64_t> first(static_cast<size_t>(c.n_rows)), last(first.size());
      for (int64_t r = 0; r < c.n_rows; ++r) {
        last[static_cast<size_t>(r)] = c.start + r;
        first[static_cast<size_t>(r)] =
            c.window > 0 ? std::max<int64_t>(0, c.start + r - c.window + 1) : 0;
      }
      AttentionHeadArgs args;
      args.queries = queries.data();
      args.row_stride = row_stride;
      args.n_rows = c.n_rows;
      args.group = c.group;
      args.head_dim = c.head_dim;
      args.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
      cache.bind_head(0, 1, args);
      args.first = first.data();
      args.last = last.data();
      args.sinks = c.sinks ? sinks.data() : nullptr;
      args.output_stride = row_stride;
      std::vector<float> expected(queries.size(), 0.0f);
      args.output = expected.data();
      attention_head_reference(args);
      for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512}) {
        if (!isa_supported(isa)) continue;
        std::vector<float> got(queries.size(), 0.0f);
        args.output = got.data();
        attention_head(args, isa);
        EXPECT_LE(nmse(got, expected), 1e-10)
            << c.name << " on " << isa_name(isa) << ", " << dtype_name(type) << " cache";
      }
    }
  }
}

// An f16 cache stores each element rounded to half precision (relative error <= 2^-11), so its
// attention stays within about that of the f32 cache's on the same data.
// Keys and values beyond the half range are stored as the largest half, not inf (an inf key
// would make the row's softmax NaN).
TEST(Attention, HalfCacheSaturatesOutOfRangeElements) {
  constexpr int64_t kDim = 32;
  KvCache cache(1, KvCache::Gqa{1, kDim, DType::F16}, 4);
  cache.reserve(1);
  std::vector<float> row(kDim, 1.0f);
  row[0] = 1e6f;
  row[1] = -1e9f;
  cache.store_key(0, 0, row.data());
  cache.store_value(0, 0, row.data());
  auto half_at = [](const uint8_t* base, int64_t index) {
    uint16_t bits;
    std::memcpy(&bits, base + 2 * index, 2);
    return quant::fp16_to_fp32(bits);
  };
  const auto* keys = static_cast<const uint8_t*>(cache.key_blocks(0, 0));
  const auto* values = static_cast<const uint8_t*>(cache.head_values(0, 0));
  // Key element d of position 0 is lane 0 of row d of the first block.
  EXPECT_EQ(half_at(keys, 0 * cpu::kKeyBlock), 65504.0f);
  EXPECT_EQ(half_at(keys, 1 * cpu::kKeyBlock), -65504.0f);
  EXPECT_EQ(half_at(keys, 2 * cpu::kKeyBlock), 1.0f);
  EXPECT_EQ(half_at(values, 0), 65504.0f);
  EXPECT_EQ(half_at(values, 1), -65504.0f);
}

TEST(Attention, HalfCacheIsCloseToFloatCache) {
  std::mt19937 random(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  constexpr int64_t kRows = 40, kStart = 200, kGroup = 4, kDim = 64;
  const int64_t n_positions = kStart + kRows;
  KvCache f32(1, KvCache::Gqa{1, kDim, DType::F32}, n_positions);
  KvCache f16(1, KvCache::Gqa{1, kDim, DType::F16}, n_positions);
  f32.reserve(n_positions);
  f16.reserve(n_positions);
  std::vector<float> key(kDim), value(kDim);
  for (int64_t j = 0; j < n_positions; ++j) {
    for (float& x : key) x = normal(random);
    for (float& x : value) x = normal(random);
    for (KvCache* cache : {&f32, &f16}) {
      cache->store_key(0, j, key.data());
      cache->store_value(0, j, value.data());
    }
  }
  std::vector<float> queries(static_cast<size_t>(kRows * kGroup * kDim));
  for (float& x : queries) x = normal(random);
  std::vector<int64_t> first(kRows, 0), last(kRows);
  for (int64_t r = 0; r < kRows; ++r) last[static_cast<size_t>(r)] = kStart + r;
  std::vector<float> outputs[2];
  for (int i = 0; i < 2; ++i) {
    const KvCache& cache = i == 0 ? f32 : f16;
    outputs[i].assign(queries.size(), 0.0f);
    AttentionHeadArgs args;
    args.queries = queries.data();
    args.row_stride = kGroup * kDim;
    args.n_rows = kRows;
    args.group = kGroup;
    args.head_dim = kDim;
    args.scale = 1.0f / std::sqrt(static_cast<float>(kDim));
    cache.bind_head(0, 0, args);
    args.first = first.data();
    args.last = last.data();
    args.output = outputs[i].data();
    args.output_stride = kGroup * kDim;
    attention_head(args);
  }
  const double error = nmse(outputs[1], outputs[0]);
  EXPECT_GT(error, 0.0);  // the halves did round
  EXPECT_LE(error, 1e-6);
}

}  // namespace
}  // namespace moenav::cpu
