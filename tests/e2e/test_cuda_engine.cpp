// The engine on device.backend cuda (label gpu): the tiny models' logits within 1e-3 of
// transformers with the same argmax, their greedy continuations, decode equal to prefill across a
// KV-cache growth, a batch of two sessions equal to each alone, and a budget too small for the
// weights refused with a message. Without a usable device those skip; NoDeviceSaysWhy checks
// that asking for cuda then fails with a message instead of a crash.
#include "backend/cuda.h"
#include "backend/nvml.h"
#include "golden.h"
#include "experts/store_factory.h"
#include "layers/moe/router.h"
#include "model/model.h"
#include "tune/profiler.h"

namespace moenav::testing {
namespace {

EngineConfig cuda_config() {
  EngineConfig config;
  config.device.backend = "cuda";
  return config;
}

std::string tiny_mixtral() { return source_path("models/tiny-mixtral"); }

TEST(CudaEngine, NoDeviceSaysWhy) {
  if (cuda::available().ok()) GTEST_SKIP() << "a CUDA device is present";
  auto engine = Engine::create(tiny_mixtral(), cuda_config());
  ASSERT_FALSE(engine.ok());
  EXPECT_NE(engine.error().find("CUDA"), std::string::npos) << engine.error();
}

class CudaEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const Status status = cuda::available();
    if (!status.ok()) GTEST_SKIP() << "skipped, no usable CUDA device: " << status.message();
  }
};

class CudaGolden : public CudaEngineTest, public ::testing::WithParamInterface<const char*> {
 protected:
  void SetUp() override {
    CudaEngineTest::SetUp();
    if (IsSkipped()) return;
    directory_ = source_path(std::string("models/") + GetParam());
    if (!std::filesystem::exists(directory_ + "/model.safetensors")) directory_ = shared_path(std::string("models/") + GetParam());
    if (!std::filesystem::exists(directory_ + "/model.safetensors")) GTEST_SKIP() << "needs ../shared/models/" << GetParam();
  }
  std::string directory_;
};

TEST_P(CudaGolden, LogitsMatchTransformers) {
  auto engine = open_engine(directory_, cuda_config());
  ASSERT_TRUE(engine);
  const LogitsComparison result = compare_logits(*engine, directory_ + "/reference_logits.safetensors");
  EXPECT_EQ(result.positions, 128);
  EXPECT_LE(result.max_abs_diff, 1e-3);
  EXPECT_EQ(result.argmax_mismatches, 0);
  EXPECT_GT(engine->gpu_peak_bytes(), 0);
}

TEST_P(CudaGolden, GreedyContinuationsMatchTransformers) {
  auto engine = open_engine(directory_, cuda_config());
  ASSERT_TRUE(engine);
  const nlohmann::json reference = read_json(directory_ + "/reference.json");
  for (const auto& entry : reference["greedy"]) {
    const auto prompt = entry["prompt_ids"].get<std::vector<int32_t>>();
    const auto expected = entry["greedy_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(greedy(*engine, prompt, expected.size()), expected) << entry["prompt"];
  }
}

INSTANTIATE_TEST_SUITE_P(Models, CudaGolden, ::testing::Values("tiny-mixtral", "tiny-qwen3-moe"));

std::vector<int32_t> some_tokens(size_t n, int64_t vocab) {
  std::vector<int32_t> tokens(n);
  for (size_t i = 0; i < n; ++i) tokens[i] = static_cast<int32_t>((i * 7919 + 13) % static_cast<size_t>(vocab));
  return tokens;
}

double max_difference(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double largest = 0.0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    largest = std::max(largest, static_cast<double>(std::abs(a[i] - b[i])));
  return largest;
}

// 300 positions: the device cache grows from 256 slots mid-sequence.
TEST_F(CudaEngineTest, DecodeEqualsPrefillAcrossCacheGrowth) {
  auto engine = open_engine(tiny_mixtral(), cuda_config());
  ASSERT_TRUE(engine);
  const std::vector<int32_t> tokens = some_tokens(300, engine->vocab_size());
  auto full_session = engine->new_session();
  auto full = engine->evaluate(*full_session, tokens, true);
  ASSERT_TRUE(full.ok()) << full.error();
  auto step_session = engine->new_session();
  const size_t vocab = static_cast<size_t>(engine->vocab_size());
  double largest = 0.0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    auto step = engine->evaluate(*step_session, std::span<const int32_t>(&tokens[i], 1));
    ASSERT_TRUE(step.ok()) << step.error();
    const std::vector<float> expected(full->begin() + static_cast<std::ptrdiff_t>(i * vocab),
                                      full->begin() + static_cast<std::ptrdiff_t>((i + 1) * vocab));
    largest = std::max(largest, max_difference(*step, expected));
  }
  EXPECT_LE(largest, 1e-4);
}

TEST_F(CudaEngineTest, BatchOfTwoSessionsEqualsEachAlone) {
  auto engine = open_engine(tiny_mixtral(), cuda_config());
  ASSERT_TRUE(engine);
  const std::vector<int32_t> first = some_tokens(20, engine->vocab_size());
  const std::vector<int32_t> second(first.rbegin(), first.rbegin() + 11);
  auto a = engine->new_session(), b = engine->new_session();
  const ForwardRequest requests[] = {{a.get(), first, false}, {b.get(), second, true}};
  std::vector<std::vector<float>> batched;
  ASSERT_TRUE(engine->forward(requests, &batched).ok());
  auto alone_a = engine->new_session(), alone_b = engine->new_session();
  auto expected_a = engine->evaluate(*alone_a, first);
  auto expected_b = engine->evaluate(*alone_b, second, true);
  ASSERT_TRUE(expected_a.ok() && expected_b.ok());
  EXPECT_LE(max_difference(batched[0], *expected_a), 1e-4);
  EXPECT_LE(max_difference(batched[1], *expected_b), 1e-4);
}

TEST_F(CudaEngineTest, BudgetBelowTheWeightsIsRefusedWithAMessage) {
  EngineConfig config = cuda_config();
  config.device.gpu_memory = "1MiB";
  auto engine = Engine::create(tiny_mixtral(), config);
  ASSERT_FALSE(engine.ok());
  EXPECT_NE(engine.error().find("budget"), std::string::npos) << engine.error();
  EXPECT_NE(engine.error().find("--cache-size auto"), std::string::npos) << engine.error();
}

// The all-resident reference of the expert-cache tests: its engine, a 40-token prompt and the
// prompt's logits.
struct ResidentRun {
  std::unique_ptr<Engine> engine;
  std::vector<int32_t> prompt;
  std::vector<float> logits;
};

void run_resident(ResidentRun& run) {
  run.engine = open_engine(tiny_mixtral(), cuda_config());
  ASSERT_TRUE(run.engine);
  run.prompt = some_tokens(40, run.engine->vocab_size());
  auto session = run.engine->new_session();
  auto logits = run.engine->evaluate(*session, run.prompt, true);
  ASSERT_TRUE(logits.ok()) << logits.error();
  run.logits = std::move(*logits);
}

// Experts in host memory behind device slots: the same kernels on the same bytes, so logits equal
// the all-resident run's and greedy output is identical, for each policy and scope, and with
// prefetching on the copy stream (next-layer gate speculation, routing statistics), which only
// moves bytes earlier; prefetched experts get used.
TEST_F(CudaEngineTest, CachedExpertsMatchAllResident) {
  ResidentRun run;
  ASSERT_NO_FATAL_FAILURE(run_resident(run));
  auto& [resident, prompt, expected] = run;
  const std::vector<int32_t> expected_greedy = greedy(*resident, prompt, 24);
  struct Case {
    const char* policy;
    const char* scope;
    const char* size;
    const char* prefetch;
  };
  // 0 slots: every expert streams through the staging slot.
  for (const Case& c : {Case{"lru", "layer", "2", "none"}, Case{"lfu", "global", "2", "none"},
                        Case{"lru", "layer", "3", "next_layer_gate"}, Case{"lru", "layer", "3", "trace"},
                        Case{"lru", "layer", "0", "none"}}) {
    SCOPED_TRACE(std::string(c.policy) + " " + c.scope + " " + c.size + " slots, prefetch " + c.prefetch);
    EngineConfig config = cuda_config();
    config.placement.expert_cache.size = c.size;
    config.placement.expert_cache.policy = c.policy;
    config.placement.expert_cache.scope = c.scope;
    config.prefetch.policy = c.prefetch;
    auto cached = open_engine(tiny_mixtral(), config);
    ASSERT_TRUE(cached);
    auto session = cached->new_session();
    auto logits = cached->evaluate(*session, prompt, true);
    ASSERT_TRUE(logits.ok()) << logits.error();
    EXPECT_LE(max_difference(*logits, expected), 1e-6);
    EXPECT_EQ(greedy(*cached, prompt, 24), expected_greedy);
    const ExpertCounters counters = cached->expert_counters();
    EXPECT_GT(counters.tier(Tier::Device).misses, 0);
    EXPECT_GT(counters.host_to_device_bytes, 0);
    EXPECT_LT(cached->gpu_peak_bytes(), resident->gpu_peak_bytes());
    if (std::string(c.prefetch) != "none") {
      EXPECT_GT(counters.prefetch_issued, 0);
      EXPECT_GT(counters.prefetch_used, 0);
    }
  }
}

// Decode steps of resident experts select and run them on the device; a prefill of more rows
// selects on the host. A routing observer sees every MoE layer either way (the device's
// selections after the step): the same experts, with weights from the device's and the host's
// expf, and the decode steps' logits agree with the prefill's rows.
TEST_F(CudaEngineTest, DeviceRoutingMatchesHostRouting) {
  auto stepped = open_engine(tiny_mixtral(), cuda_config());
  auto prefilled = open_engine(tiny_mixtral(), cuda_config());
  ASSERT_TRUE(stepped && prefilled);
  std::vector<std::vector<Routing>> device_routes, host_routes;  // [layer][call]
  auto record = [](std::vector<std::vector<Routing>>& into) {
    return [&into](int64_t layer, const Routing& routing) {
      if (into.size() <= static_cast<size_t>(layer)) into.resize(static_cast<size_t>(layer) + 1);
      into[static_cast<size_t>(layer)].push_back(routing);
    };
  };
  stepped->set_routing_observer(record(device_routes));
  prefilled->set_routing_observer(record(host_routes));
  const std::vector<int32_t> prompt = some_tokens(12, stepped->vocab_size());
  auto whole = prefilled->new_session();
  auto all_rows = prefilled->evaluate(*whole, prompt, true);
  ASSERT_TRUE(all_rows.ok());
  auto session = stepped->new_session();
  const auto vocab = static_cast<size_t>(stepped->vocab_size());
  for (size_t i = 0; i < prompt.size(); ++i) {
    auto logits = stepped->evaluate(*session, std::span<const int32_t>(&prompt[i], 1));
    ASSERT_TRUE(logits.ok());
    const std::vector<float> row(all_rows->begin() + i * vocab, all_rows->begin() + (i + 1) * vocab);
    EXPECT_LE(max_difference(*logits, row), 1e-4) << "token " << i;
  }
  ASSERT_EQ(device_routes.size(), host_routes.size());
  int64_t compared = 0;
  for (size_t layer = 0; layer < host_routes.size(); ++layer) {
    if (host_routes[layer].empty()) continue;
    ASSERT_EQ(host_routes[layer].size(), 1u);  // one prefill call of 12 rows
    ASSERT_EQ(device_routes[layer].size(), prompt.size());  // one call per decode step
    const Routing& host = host_routes[layer][0];
    for (size_t t = 0; t < prompt.size(); ++t) {
      const Routing& device = device_routes[layer][t];
      ASSERT_EQ(device.n_tokens, 1);
      ASSERT_EQ(device.k, host.k);
      for (int64_t slot = 0; slot < host.k; ++slot) {
        EXPECT_EQ(device.expert(0, slot), host.expert(static_cast<int64_t>(t), slot)) << layer << " " << t;
        EXPECT_NEAR(device.weight(0, slot), host.weight(static_cast<int64_t>(t), slot), 1e-5);
        ++compared;
      }
    }
  }
  EXPECT_EQ(compared, 6 * 12 * 2);  // 6 MoE layers, 12 tokens, 2 experts each
}

// Decode steps routed on the device replay as a recorded CUDA graph: the first step of a shape
// runs eagerly, the next one is recorded, later ones launch the recording. They are the same
// kernels on the same inputs, so the logits equal those of a run without graphs bit for bit:
// across a KV-cache growth at position 256 (a new shape, recorded again), and with a routing
// observer, whose copies of the selections are recorded too.
TEST_F(CudaEngineTest, GraphedDecodeEqualsEager) {
  EngineConfig without = cuda_config();
  without.device.cuda_graphs = false;
  auto graphed = open_engine(tiny_mixtral(), cuda_config());
  auto eager = open_engine(tiny_mixtral(), without);
  ASSERT_TRUE(graphed && eager);
  const std::vector<int32_t> tokens = some_tokens(270, graphed->vocab_size());
  const std::span<const int32_t> prompt(tokens.data(), 250);
  auto graphed_session = graphed->new_session(), eager_session = eager->new_session();
  ASSERT_TRUE(graphed->evaluate(*graphed_session, prompt).ok());
  ASSERT_TRUE(eager->evaluate(*eager_session, prompt).ok());
  std::vector<Routing> graphed_routes, eager_routes;
  auto step = [&](size_t i) {
    const std::span<const int32_t> token(&tokens[i], 1);
    auto a = graphed->evaluate(*graphed_session, token);
    auto b = eager->evaluate(*eager_session, token);
    ASSERT_TRUE(a.ok()) << a.error();
    ASSERT_TRUE(b.ok()) << b.error();
    EXPECT_EQ(*a, *b) << "position " << i;
  };
  for (size_t i = 250; i < 262; ++i) ASSERT_NO_FATAL_FAILURE(step(i));
  // 250 eager, 251 recorded, 252-255 launched; the cache grows: 256 eager, 257 recorded, 258-261.
  EXPECT_EQ(graphed->gpu_graph_launches(), 10);
  EXPECT_EQ(eager->gpu_graph_launches(), 0);
  graphed->set_routing_observer([&](int64_t, const Routing& routing) { graphed_routes.push_back(routing); });
  eager->set_routing_observer([&](int64_t, const Routing& routing) { eager_routes.push_back(routing); });
  for (size_t i = 262; i < 270; ++i) ASSERT_NO_FATAL_FAILURE(step(i));
  EXPECT_EQ(graphed->gpu_graph_launches(), 10 + 7);
  ASSERT_EQ(graphed_routes.size(), eager_routes.size());
  ASSERT_EQ(graphed_routes.size(), 8u * 6u);  // 8 steps, 6 MoE layers
  for (size_t i = 0; i < graphed_routes.size(); ++i) {
    EXPECT_EQ(graphed_routes[i].experts, eager_routes[i].experts) << i;
    EXPECT_EQ(graphed_routes[i].weights, eager_routes[i].weights) << i;
  }
}

// kv_cache.type f16 on the device rounds keys and values as the CPU's cache does. The rounding
// moves the logits (0.015 max abs here); where the two backends' f32 keys differ in the last bits
// (their f32 logits agree to 2e-5) a value can round to the neighbouring half, so they agree on
// that move to a fraction of it (12 % measured), prefill and decode, in less device memory.
TEST_F(CudaEngineTest, HalfKvCacheMatchesTheCpuBackend) {
  ResidentRun run;
  ASSERT_NO_FATAL_FAILURE(run_resident(run));
  auto& [resident, prompt, expected] = run;
  EngineConfig config = cuda_config();
  config.kv_cache.type = "f16";
  EngineConfig cpu_config = config;
  cpu_config.device.backend = "cpu";
  auto gpu = open_engine(tiny_mixtral(), config);
  auto cpu = open_engine(tiny_mixtral(), cpu_config);
  ASSERT_TRUE(gpu && cpu);
  auto a = gpu->new_session();
  auto b = cpu->new_session();
  auto gpu_logits = gpu->evaluate(*a, prompt, true);
  auto cpu_logits = cpu->evaluate(*b, prompt, true);
  ASSERT_TRUE(gpu_logits.ok() && cpu_logits.ok());
  const double rounding = max_difference(*gpu_logits, expected);
  EXPECT_GT(rounding, 0.0);
  EXPECT_LE(max_difference(*gpu_logits, *cpu_logits), 0.25 * rounding);
  for (size_t i = 0; i < 8; ++i) {
    const std::span<const int32_t> token(&prompt[i], 1);
    auto next_gpu = gpu->evaluate(*a, token);
    auto next_cpu = cpu->evaluate(*b, token);
    ASSERT_TRUE(next_gpu.ok() && next_cpu.ok());
    EXPECT_LE(max_difference(*next_gpu, *next_cpu), 0.25 * rounding) << "decode step " << i;
  }
  EXPECT_LT(gpu->gpu_peak_bytes(), resident->gpu_peak_bytes());
}

// device.gemm_precision bf16 rounds prefill GEMM operands to bf16 (tensor cores): the prefill
// logits move, by about what bf16's 8-bit mantissa allows, and decode (matvec, f32) does not.
// The routed experts of the prefill run as grouped GEMMs when all are resident, expert by expert
// when cached (2 slots a layer, misses fetched), where an expert's group of at most 8 rows is an
// f32 matvec: the grouped run moves the logits about as far (0.077 against 0.074 measured on the
// emulator), at most 1.5 times as far.
TEST_F(CudaEngineTest, Bf16PrefillGemmsRoundOnlyThePrefill) {
  ResidentRun run;
  ASSERT_NO_FATAL_FAILURE(run_resident(run));
  auto& [resident, prompt, expected] = run;
  EngineConfig config = cuda_config();
  config.device.gemm_precision = "bf16";
  auto engine = open_engine(tiny_mixtral(), config);
  ASSERT_TRUE(engine);
  auto session = engine->new_session();
  auto logits = engine->evaluate(*session, prompt, true);
  ASSERT_TRUE(logits.ok()) << logits.error();
  const double moved = max_difference(*logits, expected);
  EXPECT_GT(moved, 0.0);
  EXPECT_LT(moved, 0.25);  // logits up to ~20 in magnitude; 0.074 measured on the emulator
  EngineConfig cached_config = config;
  cached_config.placement.expert_cache.size = "2";
  auto cached = open_engine(tiny_mixtral(), cached_config);
  ASSERT_TRUE(cached);
  auto cached_session = cached->new_session();
  auto per_expert = cached->evaluate(*cached_session, prompt, true);
  ASSERT_TRUE(per_expert.ok()) << per_expert.error();
  EXPECT_GT(cached->expert_counters().miss_fetched, 0);
  const double per_expert_moved = max_difference(*per_expert, expected);
  std::printf("bf16 prefill moves logits by %.3g grouped, %.3g per expert\n", moved, per_expert_moved);
  EXPECT_LE(moved, 1.5 * per_expert_moved);
  // One token at a time: every matmul is a matvec, so both configs compute the same bits.
  auto step = engine->new_session();
  auto reference = resident->new_session();
  for (size_t i = 0; i < 4; ++i) {
    const std::span<const int32_t> token(&prompt[i], 1);
    auto a = engine->evaluate(*step, token);
    auto b = resident->evaluate(*reference, token);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(max_difference(*a, *b), 0.0);
  }
}

// miss.policy lowbit computes misses from low-precision copies kept on the device. With Q8_0
// copies, the logits move from the all-resident run's by no more than quantizing every weight to
// Q8_0 moves them (a copy of another expert would move them by far more), and the misses served
// so are those the CPU backend's lowbit run counts (the same ExpertCache decisions).
TEST_F(CudaEngineTest, LowBitMissesUseTheExpertsCopies) {
  ResidentRun run;
  ASSERT_NO_FATAL_FAILURE(run_resident(run));
  auto& [resident, prompt, expected] = run;
  auto logits_of = [&](const EngineConfig& config, ExpertCounters* counters) {
    auto engine = open_engine(tiny_mixtral(), config);
    EXPECT_TRUE(engine);
    if (!engine) return std::vector<float>();
    auto session = engine->new_session();
    auto logits = engine->evaluate(*session, prompt, true);
    EXPECT_TRUE(logits.ok()) << logits.error();
    if (counters) *counters = engine->expert_counters();
    return logits.ok() ? *logits : std::vector<float>();
  };
  EngineConfig lowbit = cuda_config();
  lowbit.placement.expert_cache.size = "2";
  lowbit.miss.policy = "lowbit";
  lowbit.miss.lowbit_type = "q8_0";
  EngineConfig all_q8 = cuda_config();
  all_q8.weights.type = "q8_0";
  EngineConfig cpu_lowbit = lowbit;
  cpu_lowbit.device.backend = "cpu";
  ExpertCounters gpu_counters, cpu_counters;
  const std::vector<float> with_copies = logits_of(lowbit, &gpu_counters);
  const std::vector<float> quantized = logits_of(all_q8, nullptr);
  logits_of(cpu_lowbit, &cpu_counters);
  ASSERT_FALSE(with_copies.empty() || quantized.empty());
  const double moved = max_difference(with_copies, expected);
  EXPECT_GT(moved, 0.0);
  EXPECT_LE(moved, max_difference(quantized, expected));
  EXPECT_GT(gpu_counters.miss_lowbit, 0);
  EXPECT_EQ(gpu_counters.miss_lowbit, cpu_counters.miss_lowbit);
}

// Misses computed on the CPU from the host copy (miss.policy cpu, and auto's share) while the GPU
// runs the rest: the CPU kernels sum in another order, so logits agree to the golden tolerance
// rather than exactly. With 0 device slots every expert runs on the CPU (llama.cpp's --cpu-moe):
// nothing is copied to the device and the GPU holds none of the experts' bytes. miss.policy split
// runs a miss's gate and up on the CPU and its down projection, copied in meanwhile, on the GPU.
TEST_F(CudaEngineTest, CpuMissesMatchAllResident) {
  ResidentRun run;
  ASSERT_NO_FATAL_FAILURE(run_resident(run));
  auto& [resident, prompt, expected] = run;
  int64_t expert_bytes = 0;
  for (int64_t bytes : expert_key_bytes(resident->model())) expert_bytes += bytes;
  struct Case {
    const char* size;
    const char* miss;  // auto serves decode steps' misses by fetch, cpu or split by measured rates
    const char* prefetch = "none";
  };
  // split: gate and up on the CPU, the down projection fetched and run on the GPU (queued on the
  // copy stream before the next layer's prefetches).
  for (const Case& c : {Case{"2", "cpu"}, Case{"2", "auto"}, Case{"0", "cpu"}, Case{"2", "split"},
                        Case{"0", "split"}, Case{"2", "split", "next_layer_gate"}}) {
    SCOPED_TRACE(std::string(c.size) + " slots, miss " + c.miss + ", prefetch " + c.prefetch);
    EngineConfig config = cuda_config();
    config.placement.expert_cache.size = c.size;
    config.miss.policy = c.miss;
    config.prefetch.policy = c.prefetch;
    auto cached = open_engine(tiny_mixtral(), config);
    ASSERT_TRUE(cached);
    auto session = cached->new_session();
    auto logits = cached->evaluate(*session, prompt, true);
    ASSERT_TRUE(logits.ok()) << logits.error();
    EXPECT_LE(max_difference(*logits, expected), 1e-3);
    auto step_session = resident->new_session();
    ASSERT_TRUE(resident->evaluate(*step_session, prompt).ok());
    for (size_t step = 0; step < 8; ++step) {  // decode steps: one row each
      const std::span<const int32_t> token(&prompt[step], 1);
      auto next = cached->evaluate(*session, token);
      auto reference = resident->evaluate(*step_session, token);
      ASSERT_TRUE(next.ok() && reference.ok());
      EXPECT_LE(max_difference(*next, *reference), 1e-3);
    }
    const ExpertCounters counters = cached->expert_counters();
    if (std::string(c.miss) == "cpu") {
      EXPECT_GT(counters.miss_cpu, 0);
    }
    EXPECT_GT(counters.miss_cpu + counters.miss_fetched + counters.demand_loads, 0);
    const int64_t down_bytes = resident->model().weights.layers[0].experts[0].down.bytes();
    if (std::string(c.miss) == "split") {
      // The first two misses of every layer split, the rest on the CPU; only downs are copied.
      EXPECT_GT(counters.miss_split, 0);
      EXPECT_LT(counters.miss_split, counters.miss_cpu);
      if (std::string(c.size) == "0") {
        EXPECT_EQ(counters.host_to_device_bytes, counters.miss_split * down_bytes);
      }
    } else if (std::string(c.miss) == "cpu") {
      EXPECT_EQ(counters.miss_split, 0);
    }  // auto splits or not by the rates it measured
    if (std::string(c.size) == "0") {
      EXPECT_EQ(counters.miss_cpu, counters.tier(Tier::Device).misses);
      EXPECT_EQ(counters.tier(Tier::Device).hits, 0);
      if (std::string(c.miss) == "cpu") {
        EXPECT_EQ(counters.host_to_device_bytes, 0);
        EXPECT_LE(cached->gpu_peak_bytes(), resident->gpu_peak_bytes() - expert_bytes);
      }
    }
  }
}

// The navigator's measurements on the GPU carry the allocator's high-water mark, which gpu_mem
// goals are judged on (the host's RSS says nothing of the device).
TEST_F(CudaEngineTest, TuneMeasurementsRecordGpuMemory) {
  tune::Workload workload;
  workload.bench = {16, 4, 1, 0};
  workload.prompt_source = some_tokens(64, 512);
  tune::Profiler profiler(tiny_mixtral());
  const tune::ProfileOutcome outcome = profiler.measure(cuda_config(), workload);
  ASSERT_EQ(outcome.status, "ok") << outcome.error;
  EXPECT_GT(outcome.measurement.gpu_peak_bytes, 0);
  EXPECT_DOUBLE_EQ(outcome.measurement.value(tune::Metric::GpuMemory),
                   static_cast<double>(outcome.measurement.gpu_peak_bytes));
}

// 95 MiB: about 6 MiB of other weights and an 84 MiB reserve leave 2 slots per layer.
TEST_F(CudaEngineTest, CacheSizeAutoFitsTheBudget) {
  EngineConfig config = cuda_config();
  config.device.gpu_memory = "95MiB";
  config.placement.expert_cache.size = "auto";
  auto engine = open_engine(tiny_mixtral(), config);
  ASSERT_TRUE(engine);
  const std::vector<int32_t> prompt = some_tokens(16, engine->vocab_size());
  EXPECT_EQ(greedy(*engine, prompt, 8).size(), 8u);
  EXPECT_GT(engine->expert_counters().tier(Tier::Device).misses, 0);
  EXPECT_LE(engine->gpu_peak_bytes(), int64_t{95} << 20);
#ifndef MOENAV_CUDA_EMULATED  // the CPU emulator (tests/cuda_emulator) has no driver to ask
  auto process = cuda::nvml_process_bytes();  // the driver's view includes the CUDA context
  ASSERT_TRUE(process.ok()) << process.error();
  EXPECT_GT(*process, 0);
#endif
}

}  // namespace
}  // namespace moenav::testing
