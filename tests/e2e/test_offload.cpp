// Expert offloading end to end on the embedded tiny-mixtral: every cache policy, capacity (1 slot
// per layer to all), prefetch policy and exact miss policy gives logits bit-identical to the
// all-resident run; the cache simulator predicts a run's hits and misses exactly from its trace;
// bad configurations fail with messages that say what to change.
#include <cstring>
#include <filesystem>

#include <unistd.h>

#include <gtest/gtest.h>

#include "core/byte_size.h"
#include "experts/cache_simulator.h"
#include "experts/routing_trace.h"
#include "experts/store_factory.h"
#include "model/model.h"
#include "moenav/engine.h"
#include "test_paths.h"

namespace moenav::testing {
namespace {

std::string model_path() { return source_path("models/tiny-mixtral"); }

constexpr int64_t kPromptTokens = 24;
constexpr int64_t kDecodeTokens = 16;

EngineConfig base_config() {
  EngineConfig config;
  config.device.threads = 2;
  config.kv_cache.context = 128;
  return config;
}

// Prefill logits of every prompt token, then one decode step at a time: [40, vocab] floats.
std::vector<float> run_logits(Engine& engine) {
  std::vector<int32_t> tokens;
  for (int64_t i = 0; i < kPromptTokens + kDecodeTokens; ++i) tokens.push_back(static_cast<int32_t>((i * 131 + 17) % 4096));
  auto session = engine.new_session();
  auto prefill = engine.evaluate(*session, std::span<const int32_t>(tokens).first(kPromptTokens), true);
  EXPECT_TRUE(prefill.ok()) << prefill.error();
  std::vector<float> all = prefill.ok() ? *prefill : std::vector<float>{};
  for (int64_t i = kPromptTokens; i < kPromptTokens + kDecodeTokens; ++i) {
    auto step = engine.evaluate(*session, std::span<const int32_t>(tokens).subspan(static_cast<size_t>(i), 1));
    EXPECT_TRUE(step.ok()) << step.error();
    if (step.ok()) all.insert(all.end(), step->begin(), step->end());
  }
  return all;
}

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

const std::vector<float>& resident_logits() {
  static const std::vector<float> logits = [] {
    auto engine = Engine::create(model_path(), base_config());
    EXPECT_TRUE(engine.ok()) << engine.error();
    return run_logits(**engine);
  }();
  return logits;
}

EngineConfig cached(const std::string& policy, int slots, const std::string& prefetch,
                    const std::string& miss) {
  EngineConfig config = base_config();
  config.placement.expert_cache.policy = policy;
  config.placement.expert_cache.size = std::to_string(slots);
  config.prefetch.policy = prefetch;
  config.miss.policy = miss;
  return config;
}

const char* const kPolicies[] = {"lru", "lfu", "lfru", "static", "priority"};
const char* const kPrefetch[] = {"none", "next_layer_gate", "trace"};

TEST(OffloadExactness, EveryPolicyCapacityPrefetchAndMissPolicyIsBitIdentical) {
  const std::vector<float>& reference = resident_logits();
  ASSERT_EQ(reference.size(), static_cast<size_t>((kPromptTokens + kDecodeTokens) * 4096));
  int runs = 0;
  for (const char* policy : kPolicies) {
    for (int slots = 1; slots <= 8; ++slots) {
      for (const char* prefetch : kPrefetch) {
        for (const char* miss : {"fetch", "cpu"}) {
          SCOPED_TRACE(fmt::format("policy {} slots {} prefetch {} miss {}", policy, slots, prefetch, miss));
          auto engine = Engine::create(model_path(), cached(policy, slots, prefetch, miss));
          ASSERT_TRUE(engine.ok()) << engine.error();
          EXPECT_TRUE(bit_identical(run_logits(**engine), reference));
          const ExpertCounters counters = (*engine)->expert_counters();
          EXPECT_GT(counters.fast_hits() + counters.fast_misses(), 0);
          if (slots < 8) {
            EXPECT_GT(counters.fast_misses(), 0);
          }
          ++runs;
        }
      }
    }
  }
  EXPECT_EQ(runs, 5 * 8 * 3 * 2);
}

TEST(OffloadExactness, GlobalScopeBufferedIoSynchronousLoadsAndWarmStartAreBitIdentical) {
  const std::vector<float>& reference = resident_logits();
  const std::string stats = source_path("models/tiny-mixtral/reference.json");
  struct Case { std::string size, scope, io; int io_threads; std::string warm; std::string in_flight; };
  const Case cases[] = {{"1", "global", "direct", 2, "", "32MiB"},
                        {"3", "global", "buffered", 1, "", "1"},
                        {"1MiB", "global", "mmap", 0, "", ""},
                        {"2", "layer", "direct", 3, stats, "600KiB"},
                        {"5", "global", "direct", 2, stats, "32MiB"}};
  for (const Case& c : cases) {
    for (const char* policy : kPolicies) {
      SCOPED_TRACE(fmt::format("size {} scope {} io {} threads {} warm '{}' policy {}", c.size, c.scope,
                               c.io, c.io_threads, c.warm, policy));
      EngineConfig config = cached(policy, 1, "next_layer_gate", "fetch");
      config.placement.expert_cache.size = c.size;
      config.placement.expert_cache.scope = c.scope;
      config.placement.expert_cache.warm_start = c.warm;
      config.placement.disk_io = c.io;
      config.prefetch.io_threads = c.io_threads;
      config.prefetch.max_in_flight = c.in_flight;
      auto engine = Engine::create(model_path(), config);
      ASSERT_TRUE(engine.ok()) << engine.error();
      EXPECT_TRUE(bit_identical(run_logits(**engine), reference));
      if (!c.in_flight.empty() && c.in_flight != "1" && c.io_threads > 0) {
        auto bound = parse_byte_size(c.in_flight);
        EXPECT_LE((*engine)->expert_counters().max_bytes_in_flight, *bound);
      }
    }
  }
}

TEST(OffloadExactness, PlacementRulesPinAndExcludeExperts) {
  EngineConfig config = cached("lru", 3, "none", "fetch");
  config.placement.rules = {{"layers[0-1].experts[0,1]", "host"}, {"layers[5].experts", "disk"}};
  auto engine = Engine::create(model_path(), config);
  ASSERT_TRUE(engine.ok()) << engine.error();
  EXPECT_TRUE(bit_identical(run_logits(**engine), resident_logits()));
  const ExpertCounters counters = (*engine)->expert_counters();
  EXPECT_GT(counters.miss_staged, 0);  // layer 5 never caches
  EXPECT_EQ(counters.warm_loads, 4);
}

TEST(OffloadQuality, LowBitAndSkipMissPoliciesRunAndChangeTheNumbers) {
  for (const char* miss : {"lowbit", "skip"}) {
    SCOPED_TRACE(miss);
    auto engine = Engine::create(model_path(), cached("lru", 2, "none", miss));
    ASSERT_TRUE(engine.ok()) << engine.error();
    const std::vector<float> logits = run_logits(**engine);
    for (float v : logits) ASSERT_TRUE(std::isfinite(v));
    EXPECT_FALSE(bit_identical(logits, resident_logits()));
    const ExpertCounters counters = (*engine)->expert_counters();
    EXPECT_GT(std::string(miss) == "lowbit" ? counters.miss_lowbit : counters.miss_skipped, 0);
  }
}

// Runs a config with a trace attached and compares the run's bookkeeping counters with the
// simulator's prediction from that trace.
void expect_simulation_matches(const EngineConfig& config, const std::string& trace_path) {
  auto engine = Engine::create(model_path(), config);
  ASSERT_TRUE(engine.ok()) << engine.error();
  auto writer = RoutingTraceWriter::open(trace_path, (*engine)->model(), config.prefetch.depth);
  ASSERT_TRUE(writer.ok()) << writer.error();
  (*engine)->expert_store().set_trace(writer->get());
  run_logits(**engine);
  (*engine)->expert_store().set_trace(nullptr);
  ASSERT_TRUE((*writer)->close().ok());
  const ExpertCounters real = (*engine)->expert_counters();
  auto trace = read_routing_trace(trace_path);
  ASSERT_TRUE(trace.ok()) << trace.error();
  auto setup = resolve_cache_setup((*engine)->model(), config, (*engine)->context_length(), 2);
  ASSERT_TRUE(setup.ok()) << setup.error();
  auto predicted = simulate_cache(*trace, *setup, (*engine)->model_config());
  ASSERT_TRUE(predicted.ok()) << predicted.error();
  const ExpertCounters& sim = predicted->counters;
  EXPECT_EQ(sim.tier(Tier::Host).hits, real.tier(Tier::Host).hits);
  EXPECT_EQ(sim.tier(Tier::Host).misses, real.tier(Tier::Host).misses);
  EXPECT_EQ(sim.miss_fetched, real.miss_fetched);
  EXPECT_EQ(sim.miss_staged, real.miss_staged);
  EXPECT_EQ(sim.miss_cpu, real.miss_cpu);
  EXPECT_EQ(sim.miss_lowbit, real.miss_lowbit);
  EXPECT_EQ(sim.miss_skipped, real.miss_skipped);
  EXPECT_EQ(sim.evictions, real.evictions);
  EXPECT_EQ(sim.demand_loads, real.demand_loads);
  EXPECT_EQ(sim.prefetch_loads, real.prefetch_loads);
  EXPECT_EQ(sim.payload_bytes, real.payload_bytes);
  EXPECT_EQ(sim.prefetch_issued, real.prefetch_issued);
  EXPECT_EQ(sim.prefetch_used, real.prefetch_used);
  EXPECT_EQ(sim.prefetch_wasted, real.prefetch_wasted);
}

TEST(CacheSimulator, PredictsTheRealRunsHitsAndMissesExactly) {
  const std::string trace_path = ::testing::TempDir() + "offload_sim_" + std::to_string(getpid()) + ".trace";
  for (const char* policy : kPolicies) {
    for (int slots : {1, 2, 3, 5, 8}) {
      for (const char* prefetch : kPrefetch) {
        for (const char* miss : {"fetch", "cpu", "skip", "lowbit"}) {
          SCOPED_TRACE(fmt::format("policy {} slots {} prefetch {} miss {}", policy, slots, prefetch, miss));
          expect_simulation_matches(cached(policy, slots, prefetch, miss), trace_path);
        }
      }
    }
  }
  EngineConfig deep = cached("lfru", 2, "next_layer_gate", "fetch");
  deep.prefetch.depth = 2;
  deep.placement.expert_cache.scope = "global";
  expect_simulation_matches(deep, trace_path);
  std::filesystem::remove(trace_path);
}

TEST(CacheSimulator, ATraceOfTheResidentRunPredictsACachedRun) {
  const std::string trace_path = ::testing::TempDir() + "offload_resident_" + std::to_string(getpid()) + ".trace";
  auto resident = Engine::create(model_path(), base_config());
  ASSERT_TRUE(resident.ok());
  auto writer = RoutingTraceWriter::open(trace_path, (*resident)->model(), 1);
  ASSERT_TRUE(writer.ok());
  (*resident)->expert_store().set_trace(writer->get());
  run_logits(**resident);
  (*resident)->expert_store().set_trace(nullptr);
  ASSERT_TRUE((*writer)->close().ok());
  auto trace = read_routing_trace(trace_path);
  ASSERT_TRUE(trace.ok());
  EXPECT_EQ(trace->tokens(), kPromptTokens + kDecodeTokens);
  const EngineConfig config = cached("lru", 2, "next_layer_gate", "fetch");
  auto engine = Engine::create(model_path(), config);
  ASSERT_TRUE(engine.ok());
  run_logits(**engine);
  auto setup = resolve_cache_setup((*engine)->model(), config, (*engine)->context_length(), 2);
  ASSERT_TRUE(setup.ok());
  auto predicted = simulate_cache(*trace, *setup, (*engine)->model_config());
  ASSERT_TRUE(predicted.ok());
  EXPECT_EQ(predicted->counters.fast_hits(), (*engine)->expert_counters().fast_hits());
  EXPECT_EQ(predicted->counters.fast_misses(), (*engine)->expert_counters().fast_misses());
  EXPECT_EQ(predicted->counters.prefetch_used, (*engine)->expert_counters().prefetch_used);
  std::filesystem::remove(trace_path);
}

void expect_error(const EngineConfig& config, const std::vector<std::string>& words) {
  auto engine = Engine::create(model_path(), config);
  ASSERT_FALSE(engine.ok());
  for (const std::string& word : words) EXPECT_NE(engine.error().find(word), std::string::npos) << engine.error();
}

TEST(OffloadConfig, BadConfigurationsGetClearErrors) {
  // The fixed part alone, to place budgets around it.
  auto model = load_model(model_path());
  ASSERT_TRUE(model.ok());
  auto setup = resolve_cache_setup(**model, base_config(), 128, 2);
  ASSERT_TRUE(setup.ok());
  const int64_t fixed = setup->plan.fixed_bytes();
  const int64_t expert = (**model).weights.layers[0].experts[0].bytes();

  EngineConfig larger = cached("lru", 8, "none", "fetch");
  larger.device.host_memory = std::to_string(fixed + 12 * expert);
  expect_error(larger, {"device.host_memory", "larger than the budget", "expert cache"});

  EngineConfig below = cached("lru", 1, "none", "fetch");
  below.device.host_memory = std::to_string(fixed / 2);
  expect_error(below, {"device.host_memory", "fixed part", "kv cache", "workspaces"});

  EngineConfig all_over = base_config();
  all_over.device.host_memory = std::to_string(fixed + 10 * expert);
  expect_error(all_over, {"every expert resident", "--cache-size"});

  EngineConfig too_small = cached("lru", 1, "none", "fetch");
  too_small.placement.expert_cache.size = "auto";
  too_small.device.host_memory = std::to_string(fixed + 3 * expert);
  expect_error(too_small, {"at least 6", "one per MoE layer"});

  EngineConfig auto_size = base_config();
  auto_size.placement.expert_cache.size = "auto";
  expect_error(auto_size, {"\"auto\" needs a budget", "device.host_memory"});

  EngineConfig fits = base_config();
  fits.placement.expert_cache.size = "auto";
  fits.device.host_memory = std::to_string(fixed + 20 * expert);
  auto ok = Engine::create(model_path(), fits);
  ASSERT_TRUE(ok.ok()) << ok.error();
  EXPECT_TRUE((*ok)->expert_store().memory_plan().cached);
  EXPECT_LE((*ok)->expert_store().memory_plan().total_bytes(), fixed + 20 * expert);

  EngineConfig slots = cached("lru", 9, "none", "fetch");
  expect_error(slots, {"between 1", "8 experts"});
  EngineConfig garbage = cached("lru", 1, "none", "fetch");
  garbage.placement.expert_cache.size = "lots";
  expect_error(garbage, {"'lots'", "slot count"});

  EngineConfig unknown = cached("lru", 2, "none", "fetch");
  unknown.placement.expert_cache.policy = "fifo";
  expect_error(unknown, {"'fifo'", "lru, lfu, lfru, static, priority"});
  auto from_json = config_from_json(nlohmann::json::parse(R"({"placement": {"expert_cache": {"policy": "fifo"}}})"));
  ASSERT_FALSE(from_json.ok());
  EXPECT_NE(from_json.error().find("fifo"), std::string::npos);
  EngineConfig unknown_prefetch = cached("lru", 2, "psychic", "fetch");
  expect_error(unknown_prefetch, {"prefetch.policy", "psychic"});
  EngineConfig unknown_miss = cached("lru", 2, "none", "pray");
  expect_error(unknown_miss, {"miss.policy", "pray"});

  EngineConfig top_k = base_config();
  top_k.routing.top_k = 9;
  expect_error(top_k, {"routing.top_k = 9", "8 experts"});
  EngineConfig schedule = base_config();
  schedule.routing.per_layer_top_k = {2, 2, 9, 1, 1, 1};
  expect_error(schedule, {"per_layer_top_k[2]"});

  EngineConfig device_rule = cached("lru", 2, "none", "fetch");
  device_rule.placement.rules = {{"layers[0].experts", "device"}};
  expect_error(device_rule, {"\"device\" needs a GPU"});
  EngineConfig bad_rule = cached("lru", 2, "none", "fetch");
  bad_rule.placement.rules = {{"layers[0-99].experts", "host"}};
  expect_error(bad_rule, {"index 99 is out of range"});
  EngineConfig too_many_pins = cached("lru", 2, "none", "fetch");
  too_many_pins.placement.rules = {{"layers[0].experts[0-2]", "host"}};
  expect_error(too_many_pins, {"pin 3 experts", "2 slots"});
  EngineConfig rules_without_cache = base_config();
  rules_without_cache.placement.rules = {{"layers[0].experts", "host"}};
  expect_error(rules_without_cache, {"need an expert cache"});
  EngineConfig missing_stats = cached("static", 2, "none", "fetch");
  missing_stats.placement.expert_cache.warm_start = "/nonexistent/stats.json";
  expect_error(missing_stats, {"/nonexistent/stats.json", "cannot open"});
}

}  // namespace
}  // namespace moenav::testing
