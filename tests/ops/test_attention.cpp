// The blocked attention kernel on every instruction set against the plain reference (two-pass
// softmax, double sums): one table of cases (decode, prefill chunks, GQA groups, sliding windows,
// sinks, head sizes that do not fill a vector), error as NMSE.
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

TEST(Attention, EveryIsaMatchesReference) {
  std::mt19937 random(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const AttentionCase& c : kCases) {
    const int64_t n_positions = c.start + c.n_rows;
    // Keys in the cache's block layout, of the second of three KV heads. Positions past the last
    // row's (a later chunk's keys, still in the last block) hold huge values: they must be masked.
    constexpr int64_t kKvHeads = 3;
    const int64_t kv_dim = kKvHeads * c.head_dim;
    const int64_t cached = n_positions + 20;
    KvCache cache(1, KvCache::Gqa{kKvHeads, c.head_dim}, cached);
    cache.reserve(cached);
    std::vector<float> key_row(static_cast<size_t>(kv_dim));
    for (int64_t j = 0; j < cached; ++j) {
      for (float& x : key_row) x = j < n_positions ? normal(random) : 1e30f;
      cache.store_key(0, j, key_row.data());
    }
    std::vector<float> values(static_cast<size_t>(cached * kv_dim));
    for (float& x : values) x = normal(random);
    const int64_t row_stride = c.group * c.head_dim + 16;
    std::vector<float> queries(static_cast<size_t>(c.n_rows * row_stride));
    for (float& x : queries) x = 2.0f * normal(random);  // peaked softmax
    std::vector<float> sinks(static_cast<size_t>(c.group));
    for (float& x : sinks) x = normal(random);
    std::vector<int64_t> first(static_cast<size_t>(c.n_rows)), last(first.size());
    for (int64_t r = 0; r < c.n_rows; ++r) {
      last[static_cast<size_t>(r)] = c.start + r;
      first[static_cast<size_t>(r)] = c.window > 0 ? std::max<int64_t>(0, c.start + r - c.window + 1) : 0;
    }
    AttentionHeadArgs args;
    args.queries = queries.data();
    args.row_stride = row_stride;
    args.n_rows = c.n_rows;
    args.group = c.group;
    args.head_dim = c.head_dim;
    args.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    args.key_blocks = cache.key_blocks(0, 1);
    args.key_block_stride = cache.key_block_stride();
    args.values = values.data() + c.head_dim;
    args.value_stride = kv_dim;
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
      EXPECT_LE(nmse(got, expected), 1e-10) << c.name << " on " << isa_name(isa);
    }
  }
}

}  // namespace
}  // namespace moenav::cpu
