// Writes a new file as a stream of byte pieces, atomically: bytes go to "<path>.tmp", which is
// renamed over <path> only when everything was written. A crash or a full disk therefore never
// leaves a truncated model or logits file that a later run would try (and fail) to parse.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "moenav/status.h"

namespace moenav {

class FileWriter {
 public:
  explicit FileWriter(std::string path);
  ~FileWriter();  // removes the temporary file unless finish() succeeded
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  Status open();
  Status write(const void* data, size_t bytes);
  // Zero bytes up to the next multiple of `alignment` (counted from the start of the file).
  Status pad_to(uint64_t alignment);
  uint64_t position() const { return position_; }
  Status finish();  // flush, close, rename into place

 private:
  std::string path_;
  std::string temporary_path_;
  std::FILE* stream_ = nullptr;
  uint64_t position_ = 0;
  bool finished_ = false;
};

}  // namespace moenav
