// A fork-join pool built for decode latency: one token of a small model is dozens of parallel
// regions of a few microseconds each, so dispatch must cost far less than that. Workers spin on
// a generation counter for a while before they sleep (std::atomic::wait), and the calling thread
// takes part in every region.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace moenav {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // total threads, the caller included; <= 0: hardware count
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(thread_index, n_threads) once on every thread of the pool; returns when all are done.
  template <typename Fn>
  void run(Fn&& fn) {
    run_erased([](void* context, int thread, int n) { (*static_cast<Fn*>(context))(thread, n); },
               &fn);
  }

  // Calls fn(begin, end) on contiguous chunks of [0, n) split evenly across the threads.
  template <typename Fn>
  void parallel_for(int64_t n, Fn&& fn) {
    if (n <= 0) return;
    if (n_threads_ == 1 || n == 1) {
      fn(int64_t{0}, n);
      return;
    }
    run([&](int thread, int n_threads) {
      const int64_t begin = n * thread / n_threads;
      const int64_t end = n * (thread + 1) / n_threads;
      if (begin < end) fn(begin, end);
    });
  }

 private:
  using Trampoline = void (*)(void* context, int thread, int n_threads);
  void run_erased(Trampoline trampoline, void* context);
  void worker_loop(int thread);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stopping_{false};
  Trampoline trampoline_ = nullptr;
  void* context_ = nullptr;
};

}  // namespace moenav
