// Streams and events of the CUDA emulator. Every operation queued on a stream (a kernel, a copy,
// a memset, a GEMM, a wait for an event) is a job that runs in its stream's order; when it runs
// depends on MOENAV_EMULATED_STREAMS:
//   eager   (default) each job runs as it is queued;
//   lazy    a job runs only when something needs it: a synchronization of its stream, a copy
//           into pageable host memory, a free, or a job of another stream waiting for an event
//           recorded after it;
//   random  after each job is queued, its stream runs everything queued (or not) by a coin toss
//           seeded with MOENAV_EMULATED_SEED (default 1).
// lazy and random let copies run late and early relative to the kernels of other streams, so an
// event wait the code forgot shows as wrong results instead of passing by luck, as it might on a
// GPU. The legacy default stream (nullptr) runs its jobs at once, after every other stream's.
// A capturing stream (cudaStreamBeginCapture) runs nothing: its jobs become a graph, which
// cudaGraphLaunch queues again, job by job, with the arguments they were captured with.
// Synchronizing a capturing stream, a pageable copy on it, an event on it, or an allocation or
// free during any capture invalidates the capture, as CUDA's global capture mode does.
#pragma once

#include <cstdint>
#include <functional>

#include "cuda_runtime.h"

namespace cuda_emulator {

// Queues `job` on `stream` (under the device mutex); on a capturing stream, adds it to the graph.
void enqueue(cudaStream_t stream, std::function<void()> job);
// True, after invalidating the capture and reporting `what`, when `stream` is capturing (or, for
// nullptr, any stream is: a call such as cudaMalloc or cudaFree, unsafe during a global capture).
bool capture_forbids(cudaStream_t stream, const char* what);
// Runs every job queued on `stream` so far, or on every stream.
void drain(cudaStream_t stream);
void drain_all();

}  // namespace cuda_emulator
