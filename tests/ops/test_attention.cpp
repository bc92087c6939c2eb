// The blocked attention kernel on every instruction set against the plain reference (two-pass
// softmax, double sums): one table of cases (decode, prefill chunks, GQA groups, sliding windows,
// sinks, head sizes that do not fill a vector), error as NMSE.
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/attention.h"

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
    const int64_t kv_stride = c.head_dim * 2 + 8;  // another KV head and padding in between
    const int64_t row_stride = c.group * c.head_dim + 16;
    std::vector<float> keys(static_cast<size_t>(n_positions * kv_stride));
    std::vector<float> values(keys.size());
    std::vector<float> queries(static_cast<size_t>(c.n_rows * row_stride));
    for (float& x : keys) x = normal(random);
    for (float& x : values) x = normal(random);
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
    args.keys = keys.data() + c.head_dim;  // the second KV head
    args.values = values.data() + c.head_dim;
    args.kv_stride = kv_stride;
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
