#include "core/thread_pool.h"

#include <immintrin.h>

namespace moenav {
namespace {

// About 50-100 microseconds of spinning: longer than the gap between two parallel regions of a
// decode step, far shorter than the gap between two requests.
constexpr int kSpinIterations = 1 << 14;

inline void cpu_relax() { _mm_pause(); }

}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::thread::hardware_concurrency());
  n_threads_ = n_threads < 1 ? 1 : n_threads;
  for (int thread = 1; thread < n_threads_; ++thread) {
    workers_.emplace_back([this, thread] { worker_loop(thread); });
  }
}

ThreadPool::~ThreadPool() {
  stopping_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

void ThreadPool::run_erased(Trampoline trampoline, void* context) {
  if (n_threads_ == 1) {
    trampoline(context, 0, 1);
    return;
  }
  trampoline_ = trampoline;
  context_ = context;
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  trampoline(context, 0, n_threads_);
  // Spin briefly, then yield: on an oversubscribed machine a descheduled worker would otherwise
  // cost the caller a whole time slice of spinning.
  for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
    if (spin < kSpinIterations) cpu_relax();
    else std::this_thread::yield();
  }
}

void ThreadPool::worker_loop(int thread) {
  uint64_t seen = 0;
  while (true) {
    uint64_t current = generation_.load(std::memory_order_acquire);
    for (int spin = 0; current == seen && spin < kSpinIterations; ++spin) {
      cpu_relax();
      current = generation_.load(std::memory_order_acquire);
    }
    if (current == seen) {
      generation_.wait(seen, std::memory_order_acquire);
      continue;
    }
    seen = current;
    if (stopping_.load(std::memory_order_acquire)) return;
    trampoline_(context_, thread, n_threads_);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace moenav
