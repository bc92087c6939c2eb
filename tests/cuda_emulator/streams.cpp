#include "streams.h"

#include <cstdlib>
#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include "memory.h"

struct CUstream_st {
  std::deque<std::function<void()>> jobs;
  uint64_t queued = 0;  // jobs ever queued
  uint64_t ran = 0;     // jobs ever started
};

struct CUevent_st {
  cudaStream_t stream = nullptr;  // where it was recorded last; nullptr: never (complete)
  uint64_t position = 0;          // complete once that stream has run this many jobs
};

namespace cuda_emulator {
namespace {

enum class Order { Eager, Lazy, Random };

Order order() {
  static const Order mode = [] {
    const char* text = std::getenv("MOENAV_EMULATED_STREAMS");
    if (!text || std::strcmp(text, "eager") == 0) return Order::Eager;
    if (std::strcmp(text, "lazy") == 0) return Order::Lazy;
    if (std::strcmp(text, "random") == 0) return Order::Random;
    std::fprintf(stderr, "cuda emulator: MOENAV_EMULATED_STREAMS='%s' is not eager, lazy or random\n", text);
    std::abort();
  }();
  return mode;
}

std::mt19937& coin() {
  static std::mt19937 generator([] {
    const char* seed = std::getenv("MOENAV_EMULATED_SEED");
    return seed ? static_cast<uint32_t>(std::strtoul(seed, nullptr, 10)) : 1u;
  }());
  return generator;
}

std::vector<cudaStream_t>& streams() {
  static auto* all = new std::vector<cudaStream_t>;
  return *all;
}

void run_until(cudaStream_t stream, uint64_t position) {
  while (stream->ran < position) {
    std::function<void()> job = std::move(stream->jobs.front());
    stream->jobs.pop_front();
    ++stream->ran;  // first: a job may drain its own stream (a wait for an event of its stream)
    job();
  }
}

}  // namespace

void enqueue(cudaStream_t stream, std::function<void()> job) {
  std::lock_guard lock(device_mutex());
  if (stream == nullptr) {
    drain_all();
    job();
    return;
  }
  stream->jobs.push_back(std::move(job));
  ++stream->queued;
  const bool now = order() == Order::Eager || (order() == Order::Random && coin()() % 2 == 0);
  if (now) run_until(stream, stream->queued);
}

void drain(cudaStream_t stream) {
  std::lock_guard lock(device_mutex());
  if (stream == nullptr) {
    drain_all();
  } else {
    run_until(stream, stream->queued);
  }
}

void drain_all() {
  std::lock_guard lock(device_mutex());
  for (cudaStream_t stream : streams()) run_until(stream, stream->queued);
}

}  // namespace cuda_emulator

using namespace cuda_emulator;

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  std::lock_guard lock(device_mutex());
  *stream = new CUstream_st;
  streams().push_back(*stream);
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  std::lock_guard lock(device_mutex());
  if (!stream) return cudaErrorInvalidValue;
  drain(stream);  // CUDA finishes the queued work of a destroyed stream
  std::erase(streams(), stream);
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  drain(stream);
  return sticky_error();
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  *event = new CUevent_st;
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  std::lock_guard lock(device_mutex());
  if (!event) return cudaErrorInvalidValue;
  if (stream == nullptr) {  // the legacy stream: complete once everything queued so far is
    drain_all();
    event->stream = nullptr;
    return cudaSuccess;
  }
  event->stream = stream;
  event->position = stream->queued;
  return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  std::lock_guard lock(device_mutex());
  if (!event) return cudaErrorInvalidValue;
  // What the event stands for is fixed now: a later record does not change this wait.
  const cudaStream_t source = event->stream;
  const uint64_t position = event->position;
  enqueue(stream, [source, position] {
    if (source) run_until(source, position);
  });
  return cudaSuccess;
}
