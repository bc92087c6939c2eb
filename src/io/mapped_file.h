// A read-only memory mapping of a whole file (RAII). Weights are used in place from the mapping;
// the file descriptor stays open so the disk tier of the expert store can pread() from it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "moenav/status.h"

namespace moenav {

class MappedFile {
 public:
  static Expected<std::shared_ptr<MappedFile>> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  int fd() const { return fd_; }

 private:
  MappedFile() = default;
  std::string path_;
  int fd_ = -1;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace moenav
