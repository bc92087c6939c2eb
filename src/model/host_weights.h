// Copies the matrices the CPU computes from out of the checkpoint's file mapping into huge-page
// host memory (core/host_buffer.h), where decode reads them about 1.5x faster on a virtual
// machine than from the page cache's 4 KiB pages. The engine chooses which (weights.load "copy"):
// every matrix on the CPU backend, the non-expert ones when the experts come from disk through an
// expert cache (its reader addresses them in the file), and the experts under the CUDA backend
// with a device expert cache, which pins them for its copies (anonymous memory registers with
// cudaHostRegister everywhere; a read-only file mapping needs the driver's read-only support)
// and may compute misses from them on the CPU.
// Whole tensors are read (a stacked [E, F, H] expert tensor at once) with pread, in chunks shared
// out among the pool's threads, and the views inside them and the index entries repointed.
#pragma once

#include "core/thread_pool.h"
#include "model/model.h"

namespace moenav {

enum class HostCopy : uint8_t { None, Experts, NonExperts, All };

// Returns the bytes copied.
Expected<int64_t> copy_weights_to_host_memory(Model& model, HostCopy which, ThreadPool& pool);

}  // namespace moenav
