#include "core/host_buffer.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <new>
#include <utility>

namespace moenav {
namespace {

int64_t round_up(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

}  // namespace

HostBuffer::HostBuffer(int64_t bytes) : size_(std::max<int64_t>(bytes, 0)) {
  mapped_ = round_up(std::max<int64_t>(size_, 1), sysconf(_SC_PAGESIZE));
  // Huge pages need 2 MiB-aligned extents: map 2 MiB more than needed and trim both ends.
  const int64_t alignment = mapped_ >= kHugePageBytes ? kHugePageBytes : 0;
  void* mapping = ::mmap(nullptr, static_cast<size_t>(mapped_ + alignment), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapping == MAP_FAILED) throw std::bad_alloc();
  auto* begin = static_cast<uint8_t*>(mapping);
  data_ = begin;
  if (alignment > 0) {
    const auto address = reinterpret_cast<uintptr_t>(begin);
    data_ = begin + (round_up(static_cast<int64_t>(address), alignment) - static_cast<int64_t>(address));
    if (data_ > begin) ::munmap(begin, static_cast<size_t>(data_ - begin));
    uint8_t* end = begin + mapped_ + alignment;
    if (end > data_ + mapped_) ::munmap(data_ + mapped_, static_cast<size_t>(end - (data_ + mapped_)));
    ::madvise(data_, static_cast<size_t>(mapped_), MADV_HUGEPAGE);  // advice only: no THP, no harm
  }
}

HostBuffer::~HostBuffer() { release(); }

HostBuffer::HostBuffer(HostBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      mapped_(std::exchange(other.mapped_, 0)) {}

HostBuffer& HostBuffer::operator=(HostBuffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    mapped_ = std::exchange(other.mapped_, 0);
  }
  return *this;
}

void HostBuffer::release() {
  if (data_ != nullptr) ::munmap(data_, static_cast<size_t>(mapped_));
  data_ = nullptr;
  size_ = mapped_ = 0;
}

}  // namespace moenav
