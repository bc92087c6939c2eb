// Process memory figures (Linux /proc) and a memory-read bandwidth probe, the denominator of
// every "how close to the bound" figure.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace moenav {

int64_t peak_rss_bytes();     // VmHWM
int64_t current_rss_bytes();  // VmRSS

// Sustained read bandwidth in bytes/s over a buffer of `bytes` with all pool threads
// (best of `repetitions`).
double measure_read_bandwidth(ThreadPool& pool, int64_t bytes = int64_t{1} << 29, int repetitions = 5);

}  // namespace moenav
