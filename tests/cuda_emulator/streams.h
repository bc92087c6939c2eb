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
#pragma once

#include <cstdint>
#include <functional>

#include "cuda_runtime.h"

namespace cuda_emulator {

// Queues `job` on `stream` (under the device mutex).
void enqueue(cudaStream_t stream, std::function<void()> job);
// Runs every job queued on `stream` so far, or on every stream.
void drain(cudaStream_t stream);
void drain_all();

}  // namespace cuda_emulator
