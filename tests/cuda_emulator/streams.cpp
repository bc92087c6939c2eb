#include "streams.h"

#include <cstdlib>
#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "memory.h"

struct CUgraph_st {
  std::vector<std::function<void()>> jobs;
  bool invalidated = false;  // a forbidden call during the capture
};

struct CUgraphExec_st {
  std::vector<std::function<void()>> jobs;
};

struct CUstream_st {
  std::deque<std::function<void()>> jobs;
  uint64_t queued = 0;  // jobs ever queued
  uint64_t ran = 0;     // jobs ever started
  CUgraph_st* capture = nullptr;  // while capturing
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
  if (stream->capture) {
    stream->capture->jobs.push_back(std::move(job));
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

bool capture_forbids(cudaStream_t stream, const char* what) {
  std::lock_guard lock(device_mutex());
  bool forbidden = false;
  for (cudaStream_t s : streams()) {
    if (s->capture && (stream == nullptr || s == stream)) {
      s->capture->invalidated = true;
      forbidden = true;
    }
  }
  if (forbidden) report(cudaErrorStreamCaptureUnsupported, "%s during a stream capture", what);
  return forbidden;
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
  if (capture_forbids(stream, "cudaStreamSynchronize")) return cudaErrorStreamCaptureUnsupported;
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
  if (stream && stream->capture) {
    capture_forbids(stream, "cudaEventRecord (the emulator captures no events)");
    return cudaErrorStreamCaptureUnsupported;
  }
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
  if (stream && stream->capture) {
    capture_forbids(stream, "cudaStreamWaitEvent (the emulator captures no events)");
    return cudaErrorStreamCaptureUnsupported;
  }
  // What the event stands for is fixed now: a later record does not change this wait.
  const cudaStream_t source = event->stream;
  const uint64_t position = event->position;
  enqueue(stream, [source, position] {
    if (source) run_until(source, position);
  });
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  std::lock_guard lock(device_mutex());
  if (!stream || stream->capture) {
    report(cudaErrorIllegalState, "cudaStreamBeginCapture on %s", stream ? "a capturing stream" : "the legacy stream");
    return cudaErrorIllegalState;
  }
  stream->capture = new CUgraph_st;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  std::lock_guard lock(device_mutex());
  *graph = nullptr;
  if (!stream || !stream->capture) {
    report(cudaErrorIllegalState, "cudaStreamEndCapture on a stream that is not capturing");
    return cudaErrorIllegalState;
  }
  CUgraph_st* captured = std::exchange(stream->capture, nullptr);
  if (captured->invalidated) {
    delete captured;
    return cudaErrorStreamCaptureInvalidated;
  }
  *graph = captured;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!graph) return cudaErrorInvalidValue;
  *exec = new CUgraphExec_st{graph->jobs};
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (!exec) return cudaErrorInvalidValue;
  for (const std::function<void()>& job : exec->jobs) enqueue(stream, job);
  return sticky_error();
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;  // what a launch queued are copies of its jobs
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}
