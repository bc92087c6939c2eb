// Expert offloading: decode tokens/s against the host expert-cache size, with the disk tier read
// under O_DIRECT (the page cache cannot serve misses), for LRU, LFU and static placement, with and
// without next-layer gate prefetching, on the embedded model (or argv[1]).
//
// Each point sits beside its bound, computed from figures measured in the same run:
//   compute  t_c = seconds per decode token with every expert resident (the reference)
//   disk     B   = O_DIRECT read bandwidth of expert-sized reads, one stream (demand misses are
//                  read one after another), and with the store's I/O workers in parallel
//   moved    b   = bytes the run actually read from disk per decode token (alignment included)
//   bound (overlap)  1 / max(t_c, b / B_parallel)  loads fully hidden behind compute
//   bound (serial)   1 / (t_c + b / B_single)        every miss waits, nothing overlaps
// A good point lands between the two; with prefetching it should approach the overlap bound.
// Prints a table to stderr and one JSON document to stdout.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/thread_pool.h"
#include "experts/expert_io.h"
#include "experts/expert_store.h"
#include "metrics/benchmark.h"
#include "model/model.h"
#include "moenav/engine.h"
#include "tokenizer/tokenizer.h"

namespace moenav {
namespace {

constexpr int64_t kPromptTokens = 32;
constexpr int64_t kDecodeTokens = 64;
constexpr int kRepetitions = 3;
constexpr int kIoThreads = 2;

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::vector<int32_t> prompt_tokens(Engine& engine) {
  for (const char* path : {"../shared/data/wikitext-2/test.txt", "data/wikitext-2-test-head.txt"}) {
    std::ifstream stream(path, std::ios::binary);
    if (!stream || !engine.has_tokenizer()) continue;
    std::ostringstream text;
    text << stream.rdbuf();
    std::vector<int32_t> tokens = engine.tokenizer().encode(text.str().substr(0, 4096), false);
    if (static_cast<int64_t>(tokens.size()) >= kPromptTokens) {
      tokens.resize(kPromptTokens);
      return tokens;
    }
  }
  std::vector<int32_t> tokens;
  for (int64_t i = 0; i < kPromptTokens; ++i) tokens.push_back(static_cast<int32_t>((i * 131 + 17) % engine.vocab_size()));
  return tokens;
}

struct DecodeRun {
  double seconds = 0.0;  // decode steps only
  ExpertCounters counters;  // decode steps only
};

// Prefill, then kDecodeTokens greedy steps; counters and time cover the decode steps.
DecodeRun decode(Engine& engine, const std::vector<int32_t>& prompt) {
  auto session = engine.new_session();
  auto logits = engine.evaluate(*session, prompt);
  if (!logits.ok()) {
    std::fprintf(stderr, "bench_offload: %s\n", logits.error().c_str());
    std::exit(1);
  }
  engine.reset_expert_counters();
  const auto start = Clock::now();
  for (int64_t i = 0; i < kDecodeTokens; ++i) {
    const auto best = static_cast<int32_t>(std::max_element(logits->begin(), logits->end()) - logits->begin());
    logits = engine.evaluate(*session, std::span<const int32_t>(&best, 1));
  }
  return {seconds_since(start), engine.expert_counters()};
}

// Median over repetitions after one warm-up.
DecodeRun measure(Engine& engine, const std::vector<int32_t>& prompt) {
  decode(engine, prompt);
  std::vector<DecodeRun> runs;
  for (int r = 0; r < kRepetitions; ++r) runs.push_back(decode(engine, prompt));
  std::sort(runs.begin(), runs.end(), [](const DecodeRun& a, const DecodeRun& b) { return a.seconds < b.seconds; });
  return runs[runs.size() / 2];
}

// O_DIRECT bandwidth of whole-expert reads in random order, with `threads` readers.
double disk_bandwidth(const Model& model, int threads) {
  auto reader = ExpertReader::create(model, DiskIo::Direct);
  if (!reader.ok()) return 0.0;
  std::vector<std::pair<int64_t, int32_t>> experts;
  for (int64_t l = 0; l < model.config.n_layers; ++l) {
    if (!model.config.is_moe_layer(l)) continue;
    for (int32_t e = 0; e < model.config.n_experts; ++e) experts.emplace_back(l, e);
  }
  std::mt19937 random(7);
  double best = 0.0;
  for (int round = 0; round < 5; ++round) {
    std::shuffle(experts.begin(), experts.end(), random);
    std::atomic<int64_t> bytes{0};
    std::atomic<size_t> next{0};
    const auto start = Clock::now();
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        HostBuffer slot((*reader)->slot_bytes());
        for (size_t i = next++; i < experts.size() * 4; i = next++) {
          const auto& [layer, expert] = experts[i % experts.size()];
          auto got = (*reader)->read(layer, expert, slot.data());
          if (got.ok()) bytes += *got;
        }
      });
    }
    for (std::thread& worker : workers) worker.join();
    best = std::max(best, static_cast<double>(bytes.load()) / seconds_since(start));
  }
  return best;
}

}  // namespace
}  // namespace moenav

int main(int argc, char** argv) {
  using namespace moenav;
  const std::string model_path = argc > 1 ? argv[1] : "models/tiny-mixtral";
  const int threads = std::getenv("MOENAV_BENCH_THREADS") ? std::atoi(std::getenv("MOENAV_BENCH_THREADS")) : 0;
  EngineConfig base;
  base.device.threads = threads;
  base.kv_cache.context = 256;
  auto resident = Engine::create(model_path, base);
  if (!resident.ok()) {
    std::fprintf(stderr, "bench_offload: %s\n", resident.error().c_str());
    return 1;
  }
  const Model& model = (*resident)->model();
  const std::vector<int32_t> prompt = prompt_tokens(**resident);
  const DecodeRun reference = measure(**resident, prompt);
  const double compute_seconds = reference.seconds / kDecodeTokens;
  const double disk_single = disk_bandwidth(model, 1);
  const double disk_parallel = disk_bandwidth(model, kIoThreads);
  const auto reader = ExpertReader::create(model, DiskIo::Direct);
  const bool direct = reader.ok() && (*reader)->direct();
  fmt::print(stderr, "model {}  threads {}  decode {} tokens after a {}-token prompt, median of {}\n",
             model_path, (*resident)->pool().size(), kDecodeTokens, kPromptTokens, kRepetitions);
  fmt::print(stderr, "all resident: {:.1f} tokens/s; O_DIRECT{} disk {:.2f} GB/s (1 stream), {:.2f} GB/s ({} streams)\n",
             1.0 / compute_seconds, direct ? "" : " (refused: buffered)", disk_single / 1e9, disk_parallel / 1e9, kIoThreads);
  fmt::print(stderr, "{:<7} {:<16} {:>5} {:>9} {:>8} {:>10} {:>9} {:>9} {:>8} {:>9}\n", "policy", "prefetch", "slots",
             "tokens/s", "hit rate", "MB/token", "overlap", "serial", "stall %", "accuracy");
  nlohmann::json points = nlohmann::json::array();
  for (const char* policy : {"lru", "lfu", "static"}) {
    for (const char* prefetch : {"none", "next_layer_gate"}) {
      for (int slots = 1; slots <= model.config.n_experts; ++slots) {
        EngineConfig config = base;
        config.placement.expert_cache.policy = policy;
        config.placement.expert_cache.size = std::to_string(slots);
        config.placement.expert_cache.warm_start =
            std::string(policy) == "static" && std::filesystem::exists(model_path + "/reference.json")
                ? model_path + "/reference.json" : "";
        config.placement.disk_io = "direct";
        config.prefetch.policy = prefetch;
        config.prefetch.io_threads = kIoThreads;
        auto engine = Engine::create(model_path, config);
        if (!engine.ok()) {
          std::fprintf(stderr, "bench_offload: %s\n", engine.error().c_str());
          return 1;
        }
        const DecodeRun run = measure(**engine, prompt);
        const double tokens_per_second = kDecodeTokens / run.seconds;
        const double bytes_per_token = static_cast<double>(run.counters.disk_to_host_bytes) / kDecodeTokens;
        const double overlap_bound = 1.0 / std::max(compute_seconds, bytes_per_token / disk_parallel);
        const double serial_bound = 1.0 / (compute_seconds + bytes_per_token / disk_single);
        fmt::print(stderr, "{:<7} {:<16} {:>5} {:>9.1f} {:>7.1f}% {:>10.3f} {:>9.1f} {:>9.1f} {:>7.1f}% {:>8.1f}%\n",
                   policy, prefetch, slots, tokens_per_second, 100.0 * run.counters.hit_rate(), bytes_per_token / 1e6,
                   overlap_bound, serial_bound, 100.0 * run.counters.stall_seconds / run.seconds,
                   100.0 * run.counters.prefetch_accuracy());
        points.push_back({{"policy", policy}, {"prefetch", prefetch}, {"slots_per_layer", slots},
                          {"decode_tokens_per_second", tokens_per_second},
                          {"hit_rate", run.counters.hit_rate()},
                          {"disk_bytes_per_token", bytes_per_token},
                          {"bound_overlap_tokens_per_second", overlap_bound},
                          {"bound_serial_tokens_per_second", serial_bound},
                          {"fraction_of_overlap_bound", tokens_per_second / overlap_bound},
                          {"cache_bytes", (*engine)->expert_store().memory_plan().cache_bytes()},
                          {"counters", run.counters.to_json()}});
      }
    }
  }
  const nlohmann::json out = {{"bench", "offload"},
                              {"model", model_path},
                              {"threads", (*resident)->pool().size()},
                              {"prompt_tokens", kPromptTokens},
                              {"decode_tokens", kDecodeTokens},
                              {"repetitions", kRepetitions},
                              {"o_direct", direct},
                              {"io_threads", kIoThreads},
                              {"resident_decode_tokens_per_second", 1.0 / compute_seconds},
                              {"disk_read_bandwidth_bytes_per_second", {{"one_stream", disk_single}, {"parallel", disk_parallel}}},
                              {"expert_bytes", model.weights.layers[0].experts[0].bytes()},
                              {"points", points}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
