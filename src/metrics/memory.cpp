#include "metrics/memory.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/host_buffer.h"

namespace moenav {
namespace {

int64_t read_status_kib(const char* key) {
  std::ifstream status("/proc/self/status");
  std::string line;
  const size_t key_length = std::strlen(key);
  while (std::getline(status, line)) {
    if (line.compare(0, key_length, key) == 0) return std::stoll(line.substr(key_length + 1)) * 1024;
  }
  return 0;
}

}  // namespace

int64_t peak_rss_bytes() { return read_status_kib("VmHWM"); }
int64_t current_rss_bytes() { return read_status_kib("VmRSS"); }

double measure_read_bandwidth(ThreadPool& pool, int64_t bytes, int repetitions) {
  const int64_t count = bytes / static_cast<int64_t>(sizeof(uint64_t));
  // Huge pages, as the weights are held (core/host_buffer.h): the bound is the best the memory does.
  HostBuffer memory(count * static_cast<int64_t>(sizeof(uint64_t)));
  auto* buffer = reinterpret_cast<uint64_t*>(memory.data());
  pool.parallel_for(count, [&](int64_t begin, int64_t end) {  // first touch by the readers
    for (int64_t i = begin; i < end; ++i) buffer[i] = static_cast<uint64_t>(i);
  });
  std::vector<uint64_t> sums(static_cast<size_t>(pool.size()) * 8);
  double best = 0.0;
  for (int repetition = 0; repetition < repetitions; ++repetition) {
    const auto start = std::chrono::steady_clock::now();
    pool.run([&](int thread, int n_threads) {
      const int64_t begin = count * thread / n_threads, end = count * (thread + 1) / n_threads;
      uint64_t a = 0, b = 0, c = 0, d = 0;
      int64_t i = begin;
      for (; i + 4 <= end; i += 4) {
        a += buffer[i];
        b += buffer[i + 1];
        c += buffer[i + 2];
        d += buffer[i + 3];
      }
      for (; i < end; ++i) a += buffer[i];
      sums[static_cast<size_t>(thread) * 8] = a + b + c + d;  // keeps the loads alive
    });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, static_cast<double>(bytes) / seconds);
  }
  return best;
}

}  // namespace moenav
