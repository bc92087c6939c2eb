// Host memory for weights and expert slots. Decode streams every weight byte once per token, and
// through 4 KiB pages that is a TLB miss every 4 KiB (a two-level page walk in a virtual machine):
// on this project's 2-core KVM guests a 2-thread AVX-512 sum reads 40 GB/s from 4 KiB pages and
// 61 GB/s from 2 MiB ones. So buffers of 2 MiB and more are aligned to 2 MiB and advised as
// transparent huge pages (honoured where /sys/kernel/mm/transparent_hugepage/enabled is "always"
// or "madvise"; elsewhere they are ordinary pages). Every buffer is page-aligned, so O_DIRECT
// reads land in it.
#pragma once

#include <cstdint>

namespace moenav {

inline constexpr int64_t kHugePageBytes = int64_t{2} << 20;

class HostBuffer {
 public:
  HostBuffer() = default;
  explicit HostBuffer(int64_t bytes);  // zero-filled; throws std::bad_alloc when the memory is not there
  ~HostBuffer();
  HostBuffer(HostBuffer&& other) noexcept;
  HostBuffer& operator=(HostBuffer&& other) noexcept;
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  uint8_t* data() const { return data_; }  // a handle, like unique_ptr::get()
  int64_t size() const { return size_; }

 private:
  void release();
  uint8_t* data_ = nullptr;
  int64_t size_ = 0;
  int64_t mapped_ = 0;  // bytes mapped from data_ (size_ rounded up to whole pages)
};

}  // namespace moenav
