// See file_writer.h: atomic creation of output files (GGUF, safetensors).
#include "io/file_writer.h"

#include <cerrno>
#include <cstring>
#include <vector>

namespace moenav {

FileWriter::FileWriter(std::string path)
    : path_(std::move(path)), temporary_path_(path_ + ".tmp") {}

FileWriter::~FileWriter() {
  if (stream_ != nullptr) std::fclose(stream_);
  if (!finished_) std::remove(temporary_path_.c_str());
}

Status FileWriter::open() {
  stream_ = std::fopen(temporary_path_.c_str(), "wb");
  if (stream_ == nullptr) {
    return Status::errorf("{}: cannot create: {}", temporary_path_, std::strerror(errno));
  }
  return ok_status();
}

Status FileWriter::write(const void* data, size_t bytes) {
  if (bytes == 0) return ok_status();
  if (std::fwrite(data, 1, bytes, stream_) != bytes) {
    return Status::errorf("{}: write failed after {} bytes: {}", temporary_path_, position_,
                          std::strerror(errno));
  }
  position_ += bytes;
  return ok_status();
}

Status FileWriter::pad_to(uint64_t alignment) {
  uint64_t padding = (alignment - position_ % alignment) % alignment;
  std::vector<uint8_t> zeros(padding, 0);
  return write(zeros.data(), zeros.size());
}

Status FileWriter::finish() {
  if (stream_ == nullptr) return Status::errorf("{}: not open", temporary_path_);
  std::FILE* stream = stream_;
  stream_ = nullptr;
  if (std::fclose(stream) != 0) {
    return Status::errorf("{}: write failed: {}", temporary_path_, std::strerror(errno));
  }
  if (std::rename(temporary_path_.c_str(), path_.c_str()) != 0) {
    return Status::errorf("{}: cannot rename {} into place: {}", path_, temporary_path_,
                          std::strerror(errno));
  }
  finished_ = true;
  return ok_status();
}

}  // namespace moenav
