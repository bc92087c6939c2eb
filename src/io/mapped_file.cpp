// Read-only mmap of a whole checkpoint file. Mapping (rather than reading) lets a 26 GB GGUF open
// in milliseconds and lets the page cache, not our heap, hold the weights that the expert store
// has not copied elsewhere. The descriptor stays open for the disk tier's pread().
#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace moenav {

Expected<std::shared_ptr<MappedFile>> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::errorf("{}: cannot open: {}", path, std::strerror(errno));
  // From here on the object owns fd, so every early return closes it.
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->fd_ = fd;

  struct stat info {};
  if (::fstat(fd, &info) != 0)
    return Status::errorf("{}: cannot stat: {}", path, std::strerror(errno));
  if (S_ISDIR(info.st_mode)) return Status::errorf("{}: is a directory, expected a file", path);
  if (!S_ISREG(info.st_mode)) return Status::errorf("{}: not a regular file", path);
  if (info.st_size == 0) return Status::errorf("{}: file is empty", path);

  size_t size = static_cast<size_t>(info.st_size);
  void* address = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (address == MAP_FAILED) {
    return Status::errorf("{}: cannot map {} bytes: {}", path, size, std::strerror(errno));
  }
  file->data_ = static_cast<const uint8_t*>(address);
  file->size_ = size;
  return file;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace moenav
