// matmul speed per weight format, against this machine's measured memory read bandwidth.
//   matvec:  one token x >= 100 MB of weights (K = 4096): decode is a stream over the weights, so
//            the figure of merit is weight GB/s, bounded by the bandwidth measured here (a
//            parallel sum over a 1 GiB buffer, same threads). Iterations rotate over 4 copies of
//            the weights (400 MB) so the L3 cache (tens of MB, a victim cache on AMD) cannot
//            serve part of the stream and inflate the figure. Between two reads of one copy
//            come 812 MB of other reads (3 copies, 4 bandwidth windows), more than even a
//            480 MB L3 (a 2-core Xeon VM reports one) holds.
//   matvec_cached: one token x 4 MiB of weights, served by the L3 cache: the kernel's own
//            ceiling in weight GB/s. Far above the memory bandwidth means the
//            matvec above is bound by memory, not by the kernel's instructions.
//   prefill: 512 tokens x [K = 256 -> N = 192, 256, 4096]: GFLOP/s (2 N K T flops).
// Prints Google Benchmark's table, then one JSON line per case: best and median iteration (on a
// shared machine the best is the closest to the kernel's own speed). Each matvec iteration is
// followed by a read of a 128 MiB window of a separate 1 GiB buffer, so the bound is measured
// under the same conditions as the kernel: fraction_of_memory_bw is the best iteration over the
// best window of the case, median_fraction_of_memory_bw the median of each iteration over the
// window read right after it.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/matmul.h"
#include "core/host_buffer.h"
#include "core/thread_pool.h"
#include "quant/quant.h"

namespace {

using moenav::DType;
using moenav::TensorView;

// MOENAV_BENCH_THREADS=n overrides the thread count (default: all hardware threads).
moenav::ThreadPool& pool() {
  static moenav::ThreadPool instance(
      std::getenv("MOENAV_BENCH_THREADS") ? std::atoi(std::getenv("MOENAV_BENCH_THREADS")) : 0);
  return instance;
}

// MOENAV_BENCH_ISA=scalar|avx2|avx512 forces a kernel variant (default: the best this CPU has),
// e.g. to measure the AVX2 kernels on an AVX-512 machine.
moenav::cpu::Isa bench_isa() {
  static const moenav::cpu::Isa isa = [] {
    const char* name = std::getenv("MOENAV_BENCH_ISA");
    if (name == nullptr) return moenav::cpu::best_isa();
    for (int i = 0; i < static_cast<int>(moenav::cpu::Isa::Count); ++i) {
      const auto candidate = static_cast<moenav::cpu::Isa>(i);
      if (moenav::cpu::isa_name(candidate) != name) continue;
      if (moenav::cpu::isa_supported(candidate)) return candidate;
      std::fprintf(stderr, "bench_matmul: MOENAV_BENCH_ISA=%s: not supported by this CPU\n", name);
      std::exit(2);
    }
    std::fprintf(stderr, "bench_matmul: MOENAV_BENCH_ISA=%s: expected scalar, avx2 or avx512\n",
                 name);
    std::exit(2);
  }();
  return isa;
}

double measured_bandwidth_gbps();

struct Result {
  std::string kind;
  DType dtype;
  int64_t rows, cols, tokens, weight_bytes;
  double best_seconds = INFINITY;
  std::vector<double> seconds;  // every iteration
  // matvec: the memory bandwidth measured right after each iteration (GB/s), so that each
  // kernel figure has a bound taken under the same machine conditions.
  std::vector<double> bandwidth_gbps;
  double best_bandwidth() const {
    return bandwidth_gbps.empty() ? measured_bandwidth_gbps()
                                  : *std::max_element(bandwidth_gbps.begin(), bandwidth_gbps.end());
  }
  // Median over iterations of (this iteration's weight GB/s) / (the bandwidth right after it).
  double median_fraction() const {
    if (bandwidth_gbps.empty()) return weight_bytes / median_seconds() / 1e9 / best_bandwidth();
    std::vector<double> fractions;
    for (size_t i = 0; i < seconds.size(); ++i)
      fractions.push_back(weight_bytes / seconds[i] / 1e9 / bandwidth_gbps[i]);
    std::sort(fractions.begin(), fractions.end());
    return fractions[fractions.size() / 2];
  }
  double median_seconds() const {
    std::vector<double> sorted = seconds;
    std::sort(sorted.begin(), sorted.end());
    return sorted.empty() ? INFINITY : sorted[sorted.size() / 2];
  }
};
std::map<std::string, Result>& results() {
  static std::map<std::string, Result> instance;
  return instance;
}

// Weights of `rows` x `cols`: a few rows quantized from Gaussian data, repeated (quantizing
// 100 MB with the reference k-quant quantizers would take minutes; the kernels do not care).
// In huge pages, as the engine holds weights (core/host_buffer.h).
moenav::HostBuffer make_weights(DType dtype, int64_t rows, int64_t cols) {
  constexpr int64_t kDistinctRows = 16;
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const int64_t row_bytes = moenav::dtype_bytes(dtype, cols);
  moenav::HostBuffer bytes(row_bytes * rows);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < std::min(rows, kDistinctRows); ++r) {
    for (float& v : row) v = normal(rng);
    moenav::quant::quantize_row(dtype, row.data(), bytes.data() + r * row_bytes, cols);
  }
  for (int64_t r = kDistinctRows; r < rows; ++r) {
    std::memcpy(bytes.data() + r * row_bytes, bytes.data() + (r % kDistinctRows) * row_bytes,
                static_cast<size_t>(row_bytes));
  }
  return bytes;
}

// Memory read bandwidth: a 1 GiB buffer read in 128 MiB windows (as long as one matvec
// iteration, so both see the same shared-machine conditions). Integer sums vectorize freely and
// never limit the stream.
class BandwidthProbe {
 public:
  static constexpr int64_t kWords = (int64_t{1} << 30) / int64_t{sizeof(uint64_t)};
  static constexpr int64_t kWindow = kWords / 8;
  static constexpr int64_t kWindows = kWords / kWindow;

  BandwidthProbe() : memory_(kWords * int64_t{sizeof(uint64_t)}), partial_(256) {
    pool().parallel_for(kWords, [&](int64_t begin, int64_t end) {  // first touch by the readers
      for (int64_t i = begin; i < end; ++i) buffer_[i] = static_cast<uint64_t>(i & 7);
    });
  }

  // GB/s of one read of window `window % kWindows`.
  double window_gbps(int64_t window) {
    const int64_t first = (window % kWindows) * kWindow;
    const auto start = std::chrono::steady_clock::now();
    pool().run([&](int thread, int n_threads) {
      // 8 concurrent streams per thread, like a matvec reading several rows at once.
      constexpr int kStreams = 8;
      const int64_t begin = first + kWindow * thread / n_threads;
      const int64_t length = kWindow / n_threads / kStreams / 8 * 8;
      uint64_t sums[kStreams][8] = {};
      for (int64_t i = 0; i < length; i += 8)
        for (int stream = 0; stream < kStreams; ++stream)
          for (int j = 0; j < 8; ++j) sums[stream][j] += buffer_[begin + stream * length + i + j];
      uint64_t total = 0;
      for (const auto& stream : sums)
        for (uint64_t value : stream) total += value;
      partial_[thread] = total;
    });
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    benchmark::DoNotOptimize(partial_.data());
    const int64_t streamed = kWindow / pool().size() / 64 * 64 * pool().size();
    return static_cast<double>(streamed * sizeof(uint64_t)) / seconds / 1e9;
  }

 private:
  moenav::HostBuffer memory_;  // huge pages, as the weights
  uint64_t* buffer_ = reinterpret_cast<uint64_t*>(memory_.data());
  std::vector<uint64_t> partial_;
};

BandwidthProbe& probe() {
  static BandwidthProbe instance;
  return instance;
}

// The best window of 3 passes over the buffer.
double measured_bandwidth_gbps() {
  static const double bandwidth = [] {
    double best = 0.0;
    for (int64_t window = 0; window < 3 * BandwidthProbe::kWindows; ++window) {
      best = std::max(best, probe().window_gbps(window));
    }
    return best;
  }();
  return bandwidth;
}

void run_case(benchmark::State& state, const std::string& kind, DType dtype, int64_t rows,
              int64_t cols, int64_t tokens, int copies) {
  std::vector<moenav::HostBuffer> weights;
  weights.push_back(make_weights(dtype, rows, cols));
  for (int c = 1; c < copies; ++c) {
    weights.emplace_back(weights[0].size());
    std::memcpy(weights[c].data(), weights[0].data(), static_cast<size_t>(weights[0].size()));
  }
  std::vector<TensorView> views;
  for (const auto& copy : weights)
    views.push_back(TensorView{dtype, moenav::Shape{rows, cols}, copy.data()});
  const TensorView& view = views[0];
  std::vector<float> input(static_cast<size_t>(tokens * cols));
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : input) v = normal(rng);
  std::vector<float> output(static_cast<size_t>(tokens * rows));
  const std::string key = kind + "/" + std::string(moenav::dtype_name(dtype)) + "/" +
                          std::to_string(rows) + "x" + std::to_string(cols) + "x" +
                          std::to_string(tokens);
  Result& result = results()[key];
  result = Result{kind, dtype, rows, cols, tokens, view.bytes(), INFINITY, {}, {}};
  for (const TensorView& copy : views) {  // warm-up; leaves the last copy, not the first, in cache
    moenav::cpu::matmul(bench_isa(), copy, input.data(), tokens, output.data(), pool());
  }
  size_t iteration = 0;
  for (auto _ : state) {
    const TensorView& current = views[iteration++ % views.size()];
    const auto start = std::chrono::steady_clock::now();
    moenav::cpu::matmul(bench_isa(), current, input.data(), tokens, output.data(), pool());
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    result.best_seconds = std::min(result.best_seconds, seconds);
    result.seconds.push_back(seconds);
    state.SetIterationTime(seconds);
    if (kind == "matvec") result.bandwidth_gbps.push_back(probe().window_gbps(iteration));
    benchmark::DoNotOptimize(output.data());
  }
  state.counters["GB/s"] = benchmark::Counter(
      static_cast<double>(view.bytes()) * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * rows * cols * tokens * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}

constexpr DType kFormats[] = {DType::F32,  DType::BF16, DType::F16,  DType::Q8_0, DType::Q4_0,
                              DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::Q3_K, DType::Q2_K};

void register_cases() {
  constexpr int64_t kMatvecCols = 4096;
  constexpr int64_t kMatvecBytes = 100'000'000;
  constexpr int64_t kCachedBytes = 4 * 1024 * 1024;
  for (DType dtype : kFormats) {
    const int64_t rows = (kMatvecBytes + moenav::dtype_bytes(dtype, kMatvecCols) - 1) /
                         moenav::dtype_bytes(dtype, kMatvecCols);
    const std::string name = "matvec/" + std::string(moenav::dtype_name(dtype));
    benchmark::RegisterBenchmark(
        name.c_str(),
        [=](benchmark::State& state) { run_case(state, "matvec", dtype, rows, kMatvecCols, 1, 4); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->MinTime(0.5);
  }
  for (DType dtype : kFormats) {
    const int64_t rows = kCachedBytes / moenav::dtype_bytes(dtype, kMatvecCols) / 32 * 32;
    const std::string name = "matvec_cached/" + std::string(moenav::dtype_name(dtype));
    benchmark::RegisterBenchmark(name.c_str(),
                                 [=](benchmark::State& state) {
                                   run_case(state, "matvec_cached", dtype, rows, kMatvecCols, 1, 1);
                                 })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond)
        ->MinTime(0.2);
  }
  for (DType dtype : kFormats) {
    for (int64_t rows : {192, 256, 4096}) {
      const std::string name =
          "prefill/" + std::string(moenav::dtype_name(dtype)) + "/N=" + std::to_string(rows);
      benchmark::RegisterBenchmark(
          name.c_str(),
          [=](benchmark::State& state) { run_case(state, "prefill", dtype, rows, 256, 512, 1); })
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond)
          ->MinTime(0.3);
    }
  }
}

void print_json() {
  const double bandwidth = measured_bandwidth_gbps();
  std::printf(
      "{\"bench\":\"memory_read\",\"buffer_bytes\":%lld,\"threads\":%d,\"gb_per_s\":%.2f}\n",
      static_cast<long long>(int64_t{1} << 30), pool().size(), bandwidth);
  for (const auto& [key, r] : results()) {
    const double gbps = r.weight_bytes / r.best_seconds / 1e9;
    const double gflops = 2.0 * r.rows * r.cols * r.tokens / r.best_seconds / 1e9;
    const double median_gbps = r.weight_bytes / r.median_seconds() / 1e9;
    std::printf(
        "{\"bench\":\"%s\",\"dtype\":\"%s\",\"N\":%lld,\"K\":%lld,\"tokens\":%lld,"
        "\"isa\":\"%s\",\"threads\":%d,\"weight_bytes\":%lld,\"seconds\":%.6g,"
        "\"median_seconds\":%.6g,\"weight_gb_per_s\":%.2f,\"median_weight_gb_per_s\":%.2f,"
        "\"gflop_per_s\":%.2f,\"memory_bw_gb_per_s\":%.2f,\"fraction_of_memory_bw\":%.3f,"
        "\"median_fraction_of_memory_bw\":%.3f}\n",
        r.kind.c_str(), std::string(moenav::dtype_name(r.dtype)).c_str(),
        static_cast<long long>(r.rows), static_cast<long long>(r.cols),
        static_cast<long long>(r.tokens),
        std::string(moenav::cpu::isa_name(bench_isa())).c_str(), pool().size(),
        static_cast<long long>(r.weight_bytes), r.best_seconds, r.median_seconds(), gbps,
        median_gbps, gflops, r.best_bandwidth(), gbps / r.best_bandwidth(), r.median_fraction());
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_cases();
  std::printf("memory read bandwidth: %.2f GB/s (1 GiB sum, %d threads)\n",
              measured_bandwidth_gbps(), pool().size());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  print_json();
  return 0;
}
