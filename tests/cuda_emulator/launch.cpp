// Kernel launches of the CUDA emulator. The blocks of a grid run one after another; the threads
// of a block are fibers (Boost.Context), resumed in turn until each has finished or waits at a
// rendezvous: a warp shuffle (the 32 lanes of its warp) or __syncthreads (every thread of the
// block that has not returned). A rendezvous that cannot complete (divergent barriers, a shuffle
// in a partial warp) is reported as a launch failure instead of hanging.
#include <boost/context/fiber.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "cuda_runtime.h"
#include "memory.h"
#include "streams.h"

namespace cuda_emulator {
namespace {

namespace context = boost::context;

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr size_t kStackBytes = 128 * 1024;

// Fiber stacks, reused from launch to launch.
class StackPool {
 public:
  context::stack_context allocate() {
    void* base;
    if (free_.empty()) {
      base = std::malloc(kStackBytes);
      if (!base) throw std::bad_alloc();
    } else {
      base = free_.back();
      free_.pop_back();
    }
    context::stack_context stack;
    stack.size = kStackBytes;
    stack.sp = static_cast<char*>(base) + kStackBytes;
    return stack;
  }
  void deallocate(context::stack_context& stack) noexcept {
    free_.push_back(static_cast<char*>(stack.sp) - kStackBytes);
  }

 private:
  std::vector<void*> free_;
};

// Boost.Context takes its stack allocator by value: this one forwards to the shared pool.
struct PooledStack {
  StackPool* pool;
  context::stack_context allocate() { return pool->allocate(); }
  void deallocate(context::stack_context& stack) noexcept { pool->deallocate(stack); }
};

enum class Wait { None, Shuffle, Block, Done };

struct Lane {
  uint3 thread_idx;
  Wait wait = Wait::None;
  uint64_t exchange[2] = {};  // shuffle values, alternating so that a fast lane cannot overwrite
  int parity = 0;             // one a slow lane has yet to read
  unsigned mask = 0;
  context::fiber fiber;       // the lane, while suspended
  context::fiber scheduler;   // where the lane returns when it waits
};

struct Block {
  std::vector<Lane> lanes;
  bool failed = false;
};

thread_local Lane* current_lane = nullptr;
thread_local Block* current_block = nullptr;

void suspend(Wait wait) {
  Lane& lane = *current_lane;
  lane.wait = wait;
  lane.scheduler = std::move(lane.scheduler).resume();
}

// Frees the lanes of a warp or block whose rendezvous is complete; false when none could be.
bool release(Block& block, int64_t block_index) {
  bool released = false;
  const size_t n = block.lanes.size();
  for (size_t first = 0; first < n; first += kWarp) {
    const size_t end = std::min(n, first + kWarp);
    int waiting = 0, live = 0;
    unsigned mask = kFullMask;
    for (size_t i = first; i < end; ++i) {
      if (block.lanes[i].wait == Wait::Done) continue;
      ++live;
      if (block.lanes[i].wait == Wait::Shuffle) ++waiting, mask &= block.lanes[i].mask;
    }
    if (live == 0 || waiting != live) continue;
    if (live != kWarp || mask != kFullMask) {
      fault(cudaErrorLaunchFailure,
            "block %ld, warp %zu: a shuffle with %d of %d lanes taking part (mask %#x); "
            "every lane of the warp must reach it", static_cast<long>(block_index), first / kWarp,
            live, kWarp, mask);
      block.failed = true;
      return false;
    }
    for (size_t i = first; i < end; ++i) block.lanes[i].wait = Wait::None;
    released = true;
  }
  if (released) return true;
  int live = 0, waiting = 0;
  for (const Lane& lane : block.lanes) {
    if (lane.wait == Wait::Done) continue;
    ++live;
    if (lane.wait == Wait::Block) ++waiting;
  }
  if (live == 0) return false;
  if (waiting == live) {
    for (Lane& lane : block.lanes) {
      if (lane.wait == Wait::Block) lane.wait = Wait::None;
    }
    return true;
  }
  fault(cudaErrorLaunchFailure,
        "block %ld: deadlock, %d of %d live threads wait at __syncthreads and the others at "
        "shuffles of incomplete warps", static_cast<long>(block_index), waiting, live);
  block.failed = true;
  return false;
}

bool run_block(const cudaLaunchConfig_t& config, uint3 block_idx, int64_t block_index,
               const std::function<void()>& body, StackPool& stacks) {
  const dim3 b = config.blockDim;
  Block block;
  block.lanes.resize(static_cast<size_t>(b.x) * b.y * b.z);
  current_block = &block;
  size_t i = 0;
  for (unsigned z = 0; z < b.z; ++z) {
    for (unsigned y = 0; y < b.y; ++y) {
      for (unsigned x = 0; x < b.x; ++x, ++i) {
        Lane& lane = block.lanes[i];
        lane.thread_idx = uint3{x, y, z};
        lane.fiber = context::fiber(std::allocator_arg, PooledStack{&stacks},
                                    [&lane, &body](context::fiber&& scheduler) {
                                      lane.scheduler = std::move(scheduler);
                                      body();
                                      lane.wait = Wait::Done;
                                      return std::move(lane.scheduler);
                                    });
      }
    }
  }
  blockIdx = block_idx;
  blockDim = b;
  gridDim = config.gridDim;
  for (;;) {
    for (Lane& lane : block.lanes) {
      if (lane.wait != Wait::None) continue;
      current_lane = &lane;
      threadIdx = lane.thread_idx;
      lane.fiber = std::move(lane.fiber).resume();
    }
    current_lane = nullptr;
    if (!release(block, block_index)) break;
  }
  current_block = nullptr;
  return !block.failed;  // suspended fibers of a failed block unwind as `block` goes
}

}  // namespace

uint64_t shuffle_xor(unsigned int mask, uint64_t bits, int lane_mask, int width) {
  Lane& lane = *current_lane;
  if (width != kWarp) {
    fault(cudaErrorLaunchFailure, "__shfl_xor_sync with width %d: only whole warps are emulated", width);
  }
  const int parity = lane.parity;
  lane.exchange[parity] = bits;
  lane.mask = mask;
  lane.parity ^= 1;
  suspend(Wait::Shuffle);
  const size_t self = static_cast<size_t>(&lane - current_block->lanes.data());
  const size_t source = self - self % kWarp + ((self % kWarp) ^ static_cast<size_t>(lane_mask & (kWarp - 1)));
  return current_block->lanes[source].exchange[parity];
}

void block_barrier() { suspend(Wait::Block); }

cudaError_t launch(const cudaLaunchConfig_t& config, std::function<void()> body,
                   std::initializer_list<const void*> pointers) {
  const dim3 g = config.gridDim, b = config.blockDim;
  const uint64_t threads = uint64_t{b.x} * b.y * b.z;
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535 ||
      threads == 0 || threads > 1024 || b.z > 64 || config.dynamicSmemBytes > 0) {
    report(cudaErrorInvalidConfiguration,
           "launch of grid (%u, %u, %u) x block (%u, %u, %u), %zu bytes of dynamic shared memory",
           g.x, g.y, g.z, b.x, b.y, b.z, config.dynamicSmemBytes);
    return cudaErrorInvalidConfiguration;
  }
  int argument = 0;
  for (const void* pointer : pointers) {
    ++argument;
    if (pointer && !in_device_memory(pointer, 1) && !in_registered_host_memory(pointer, 1)) {
      fault(cudaErrorIllegalAddress,
            "kernel argument %d (%p) is neither device memory nor registered host memory",
            argument, pointer);
      return cudaErrorIllegalAddress;
    }
  }
  if (sticky_error() != cudaSuccess) return sticky_error();
  enqueue(config.stream, [config, body = std::move(body)] {
    if (sticky_error() != cudaSuccess) return;  // a faulted context runs nothing more
    DeviceAccess access;
    static StackPool stacks;  // guarded by the device mutex that `access` holds
    int64_t block_index = 0;
    for (unsigned z = 0; z < config.gridDim.z; ++z) {
      for (unsigned y = 0; y < config.gridDim.y; ++y) {
        for (unsigned x = 0; x < config.gridDim.x; ++x, ++block_index) {
          if (!run_block(config, uint3{x, y, z}, block_index, body, stacks)) return;
        }
      }
    }
  });
  return sticky_error();
}

}  // namespace cuda_emulator

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;
