// Cost of one parallel region of the engine's ThreadPool: a decode step of the embedded model is
// dozens of regions of a few microseconds each, so dispatch and join must cost far less.
//   back_to_back: regions issued one after another (workers still spinning), as within a step.
//   after_gap_us=G: a region issued G microseconds after the previous one ended. Past the
//            workers' spin window they sleep (std::atomic::wait), and waking them costs a
//            futex call each: the first region of a step after a pause pays that.
// Each region's work is one store per thread to its own cache line. Prints one JSON line per
// case: median, 10th and 90th percentile nanoseconds per region over many samples.
// MOENAV_BENCH_THREADS=n sets the pool size (default: all hardware threads).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "core/thread_pool.h"

namespace {

using Clock = std::chrono::steady_clock;

struct alignas(64) Slot {
  int value = 0;
};

double elapsed_ns(Clock::time_point start) {
  return std::chrono::duration<double, std::nano>(Clock::now() - start).count();
}

void report(const char* name, int gap_us, int threads, std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  auto at = [&](double q) { return samples[static_cast<size_t>(q * (samples.size() - 1))]; };
  std::printf(
      "{\"bench\":\"thread_pool\",\"case\":\"%s\",\"after_gap_us\":%d,\"threads\":%d,"
      "\"samples\":%zu,\"median_ns\":%.0f,\"p10_ns\":%.0f,\"p90_ns\":%.0f}\n",
      name, gap_us, threads, samples.size(), at(0.5), at(0.1), at(0.9));
}

}  // namespace

int main() {
  const char* threads_env = std::getenv("MOENAV_BENCH_THREADS");
  moenav::ThreadPool pool(threads_env != nullptr ? std::atoi(threads_env) : 0);
  std::vector<Slot> slots(static_cast<size_t>(pool.size()));
  auto region = [&] {  // ThreadPool::run takes its callable by forwarding: pass a fresh one
    pool.run([&](int thread, int) { ++slots[static_cast<size_t>(thread)].value; });
  };
  for (int i = 0; i < 10000; ++i) region();  // warm-up

  constexpr int kBatch = 1000;  // regions per back-to-back sample
  std::vector<double> samples;
  for (int sample = 0; sample < 200; ++sample) {
    const auto start = Clock::now();
    for (int i = 0; i < kBatch; ++i) region();
    samples.push_back(elapsed_ns(start) / kBatch);
  }
  report("back_to_back", 0, pool.size(), samples);

  for (int gap_us : {10, 100, 300, 1000, 10000}) {
    samples.clear();
    const int count = gap_us >= 10000 ? 100 : 500;
    for (int sample = 0; sample < count; ++sample) {
      const auto until = Clock::now() + std::chrono::microseconds(gap_us);
      while (Clock::now() < until) {
      }  // the caller stays busy, as between two steps
      const auto start = Clock::now();
      region();
      samples.push_back(elapsed_ns(start));
    }
    report("after_gap", gap_us, pool.size(), samples);
  }
  return 0;
}
