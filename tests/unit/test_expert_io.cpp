// The disk tier and the expert files: aligned reads that reproduce the mapping's bytes in every
// I/O mode, the bound on bytes in flight and demand-first order of the I/O workers, routing traces
// (round trip, corrupted and truncated files), routing statistics, placement rules and the
// memory planner's breakdown.
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <unistd.h>

#include <gtest/gtest.h>

#include "experts/expert_io.h"
#include "experts/memory_planner.h"
#include "experts/placement_rules.h"
#include "experts/routing_stats.h"
#include "experts/routing_trace.h"
#include "model/model.h"
#include "test_paths.h"

namespace moenav {
namespace {

using testing::source_path;

const Model& tiny() {
  static std::unique_ptr<Model> model = [] {
    auto loaded = load_model(source_path("models/tiny-mixtral"));
    EXPECT_TRUE(loaded.ok()) << loaded.error();
    return std::move(loaded).value();
  }();
  return *model;
}

bool same_bytes(const TensorView& a, const TensorView& b) {
  return a.dtype == b.dtype && a.shape == b.shape && std::memcmp(a.data, b.data, static_cast<size_t>(a.bytes())) == 0;
}

TEST(ExpertReader, SlotsHoldTheMappingsBytesInEveryMode) {
  for (DiskIo io : {DiskIo::Direct, DiskIo::Buffered, DiskIo::Mmap}) {
    auto reader = ExpertReader::create(tiny(), io);
    ASSERT_TRUE(reader.ok()) << reader.error();
    if (io == DiskIo::Direct && !(*reader)->direct()) {
      std::fprintf(stderr, "note: this file system refuses O_DIRECT; buffered reads were used\n");
    }
    EXPECT_EQ((*reader)->slot_bytes() % kIoAlignment, 0);
    HostBuffer slot((*reader)->slot_bytes());
    for (int64_t layer = 0; layer < tiny().config.n_layers; ++layer) {
      for (int32_t expert = 0; expert < tiny().config.n_experts; ++expert) {
        std::memset(slot.data(), 0xab, static_cast<size_t>(slot.size()));
        auto read = (*reader)->read(layer, expert, slot.data());
        ASSERT_TRUE(read.ok()) << read.error();
        EXPECT_GE(*read, (*reader)->payload_bytes(layer, expert));
        const FfnWeights in_slot = (*reader)->weights_in(layer, expert, slot.data());
        const FfnWeights& mapped = tiny().weights.layers[static_cast<size_t>(layer)].experts[static_cast<size_t>(expert)];
        EXPECT_TRUE(same_bytes(in_slot.gate, mapped.gate));
        EXPECT_TRUE(same_bytes(in_slot.up, mapped.up));
        EXPECT_TRUE(same_bytes(in_slot.down, mapped.down));
      }
    }
  }
  EXPECT_FALSE(parse_disk_io("tape").ok());
}

TEST(IoQueue, NeverExceedsTheBytesInFlightBound) {
  std::atomic<int64_t> in_flight{0}, peak{0}, done{0};
  {
    IoQueue queue(4, 3);
    for (int i = 0; i < 40; ++i) {
      queue.submit(1, i % 2 == 0, [&] {
        const int64_t now = ++in_flight;
        int64_t seen = peak.load();
        while (now > seen && !peak.compare_exchange_weak(seen, now)) {}
        std::this_thread::sleep_for(std::chrono::microseconds(300));
        --in_flight;
        ++done;
      });
    }
  }  // the destructor drains the queue
  EXPECT_EQ(done.load(), 40);
  EXPECT_LE(peak.load(), 3);
  EXPECT_GE(peak.load(), 2);
}

TEST(IoQueue, DemandJobsGoBeforePrefetches) {
  std::atomic<bool> release{false};
  std::vector<int> order;
  std::mutex mutex;
  {
    IoQueue queue(1, 0);
    queue.submit(1, true, [&] { while (!release) std::this_thread::yield(); });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the worker is inside the blocker
    queue.submit(1, false, [&] { std::lock_guard<std::mutex> lock(mutex); order.push_back(1); });
    queue.submit(1, true, [&] { std::lock_guard<std::mutex> lock(mutex); order.push_back(2); });
    release = true;
  }
  EXPECT_EQ(order, (std::vector<int>{2, 1}));
}

LayerPlan plan_for(int64_t layer, const std::vector<int32_t>& routed, const std::vector<float>& weights,
                   const std::vector<float>& normed, int64_t k) {
  LayerPlan plan;
  plan.layer = layer;
  plan.k = k;
  plan.n_tokens = static_cast<int64_t>(routed.size()) / k;
  plan.routed = routed;
  plan.weights = weights;
  plan.normed = normed.data();
  return plan;
}

std::string write_sample_trace(const std::string& path) {
  auto writer = RoutingTraceWriter::open(path, tiny(), 2);
  EXPECT_TRUE(writer.ok()) << writer.error();
  std::vector<float> normed(static_cast<size_t>(2 * tiny().config.hidden));
  for (size_t i = 0; i < normed.size(); ++i) normed[i] = static_cast<float>((i * 37) % 11) - 5.0f;
  const std::vector<float> weights = {0.6f, 0.4f, 0.7f, 0.3f};
  for (int64_t layer = 0; layer < tiny().config.n_layers; ++layer) {
    const std::vector<int32_t> routed = {static_cast<int32_t>(layer % 8), 7, 3, -1};
    (*writer)->record(plan_for(layer, routed, weights, normed, 2));
  }
  EXPECT_TRUE((*writer)->close().ok());
  EXPECT_EQ((*writer)->stats().tokens, 2);
  EXPECT_EQ((*writer)->stats().counts[0][7], 1.0);
  EXPECT_EQ((*writer)->stats().transitions[0][0 * 8 + 1], 1.0);  // token 0: expert 0 -> expert 1
  return path;
}

TEST(RoutingTrace, RoundTrip) {
  const std::string path = write_sample_trace(::testing::TempDir() + "sample_" + std::to_string(getpid()) + ".trace");
  auto trace = read_routing_trace(path);
  ASSERT_TRUE(trace.ok()) << trace.error();
  EXPECT_EQ(trace->n_layers, 6);
  EXPECT_EQ(trace->n_experts, 8);
  EXPECT_EQ(trace->speculation_depth, 2);
  ASSERT_EQ(trace->layers.size(), 6u);
  EXPECT_EQ(trace->tokens(), 2);
  const TraceLayer& third = trace->layers[2];
  EXPECT_EQ(third.layer, 2);
  EXPECT_EQ(third.routed, (std::vector<int32_t>{2, 7, 3, -1}));
  EXPECT_FLOAT_EQ(third.weights[2], 0.7f);
  ASSERT_EQ(third.speculation.size(), 2u);
  EXPECT_EQ(third.speculation[0].target, 3);
  EXPECT_EQ(third.speculation[1].target, 4);
  EXPECT_EQ(third.speculation[0].predictions.size(), 4u);
  EXPECT_EQ(trace->layers[5].speculation[0].target, -1);  // nothing after the last layer
  const RoutingStats stats = trace_statistics(*trace, tiny().config);
  EXPECT_EQ(stats.counts[2][2], 1.0);
  EXPECT_EQ(stats.transitions[1][1 * 8 + 2], 1.0);
  std::filesystem::remove(path);
}

TEST(RoutingTrace, CorruptAndTruncatedFilesAreErrors) {
  const std::string path = write_sample_trace(::testing::TempDir() + "corrupt_" + std::to_string(getpid()) + ".trace");
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  in.close();
  auto rewrite = [&](const std::string& content) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
  };
  auto expect_error = [&](const std::string& content, const std::string& word) {
    rewrite(content);
    auto trace = read_routing_trace(path);
    ASSERT_FALSE(trace.ok());
    EXPECT_NE(trace.error().find(word), std::string::npos) << trace.error();
  };
  expect_error(bytes.substr(0, bytes.size() - 3), "truncated");
  expect_error(bytes.substr(0, 20), "truncated");
  expect_error("NOTATRACE" + bytes.substr(9), "bad magic");
  std::string bad_expert = bytes;
  const int32_t out_of_range = 99;
  std::memcpy(bad_expert.data() + 32 + 16, &out_of_range, 4);  // first routed expert
  expect_error(bad_expert, "outside");
  std::string bad_marker = bytes;
  bad_marker[32] = 'X';
  expect_error(bad_marker, "marker");
  std::string bad_layer = bytes;
  const uint32_t layer = 600;
  std::memcpy(bad_layer.data() + 36, &layer, 4);
  expect_error(bad_layer, "out of range");
  // Random byte flips never crash the reader.
  for (size_t i = 0; i < bytes.size(); i += 7) {
    std::string flipped = bytes;
    flipped[i] = static_cast<char>(flipped[i] ^ 0x5a);
    rewrite(flipped);
    (void)read_routing_trace(path);
  }
  std::filesystem::remove(path);
  EXPECT_FALSE(read_routing_trace(path).ok());
}

TEST(RoutingStats, LoadsReferenceCountsAndOwnFormat) {
  auto reference = load_routing_stats(source_path("models/tiny-mixtral/reference.json"), tiny().config);
  ASSERT_TRUE(reference.ok()) << reference.error();
  EXPECT_EQ(reference->counts[0][0], 34.0);
  EXPECT_EQ(reference->tokens, 65536);
  EXPECT_FALSE(reference->has_weight_sums());
  const std::string path = ::testing::TempDir() + "stats_" + std::to_string(getpid()) + ".json";
  RoutingStats stats = RoutingStats::zeros(tiny().config, false);
  stats.tokens = 3;
  stats.counts[1][2] = 3;
  stats.weight_sums[1][2] = 1.5;
  ASSERT_TRUE(save_routing_stats(path, stats).ok());
  auto loaded = load_routing_stats(path, tiny().config);
  ASSERT_TRUE(loaded.ok()) << loaded.error();
  EXPECT_EQ(loaded->tokens, 3);
  EXPECT_EQ(loaded->weight_sums[1][2], 1.5);
  std::ofstream(path) << R"({"routing_counts": [[1, 2, 3]]})";
  auto bad = load_routing_stats(path, tiny().config);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("per-layer"), std::string::npos) << bad.error();
  std::ofstream(path) << R"({"routing_counts": [[1,2,3,4,5,6,7,8],[1,2,3,4,5,6,7,8],[1,2,3,4,5,6,7,8],[1,2,3,4,5,6,7,8],[1,2,3,4,5,6,7,8],[1,2,3,4,5,6,7,-8]]})";
  bad = load_routing_stats(path, tiny().config);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("non-negative"), std::string::npos) << bad.error();
  std::ofstream(path) << "[not json";
  EXPECT_FALSE(load_routing_stats(path, tiny().config).ok());
  std::filesystem::remove(path);
}

TEST(PlacementRules, PatternsAndErrors) {
  const ModelConfig& c = tiny().config;
  auto placement = resolve_placement({{"layers[0-1].experts[0,3-4]", "host"}, {"layers[1]", "disk"}}, c, false);
  ASSERT_TRUE(placement.ok()) << placement.error();
  EXPECT_EQ(placement->tier(0, 3), Tier::Host);
  EXPECT_EQ(placement->tier(1, 4), Tier::Host);  // the first matching rule wins
  EXPECT_EQ(placement->tier(1, 5), Tier::Disk);
  EXPECT_FALSE(placement->tier(0, 1).has_value());
  EXPECT_FALSE(placement->tier(2, 0).has_value());
  for (const auto& [match, tier, word] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"layers[0].experts[8]", "host", "out of range"},
           {"layers[3-1].experts", "host", "reversed"},
           {"blocks[0]", "host", "expected 'layers'"},
           {"layers[0].experts[x]", "host", "expected a number"},
           {"layers[0", "host", "missing ']'"},
           {"layers[0].experts", "gpu", "unknown tier"},
           {"layers[0].experts", "device", "needs a GPU"}}) {
    auto bad = resolve_placement({{match, tier}}, c, false);
    ASSERT_FALSE(bad.ok()) << match;
    EXPECT_NE(bad.error().find(word), std::string::npos) << bad.error();
  }
  EXPECT_TRUE(resolve_placement({{"layers[*].experts[*]", "device"}}, c, true).ok());
}

TEST(MemoryPlanner, BreakdownAndSlots) {
  EngineConfig config;
  config.placement.expert_cache.size = "3";
  PlanInputs inputs;
  inputs.context = 256;
  inputs.slot_bytes = 300 * 1024;
  auto plan = plan_memory(tiny(), config, inputs);
  ASSERT_TRUE(plan.ok()) << plan.error();
  EXPECT_TRUE(plan->cached);
  EXPECT_EQ(plan->slots_per_layer, 3);
  EXPECT_EQ(plan->slots, 18);
  EXPECT_EQ(plan->cache_bytes(), 18 * 300 * 1024);
  const std::string text = plan->to_string();
  for (const char* item : {"non-expert weights", "kv cache", "workspaces", "expert cache", "3 per MoE layer"}) {
    EXPECT_NE(text.find(item), std::string::npos) << text;
  }
  config.placement.expert_cache.size = "2MiB";
  config.placement.expert_cache.scope = "global";
  plan = plan_memory(tiny(), config, inputs);
  ASSERT_TRUE(plan.ok()) << plan.error();
  EXPECT_EQ(plan->slots, 2 * 1024 / 300);
  EXPECT_EQ(format_bytes(3 << 20), "3.00 MiB");
}

}  // namespace
}  // namespace moenav
