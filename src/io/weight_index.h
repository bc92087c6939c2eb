// The loader's view of a checkpoint: every tensor by its file name, with dtype, shape, where its
// bytes are mapped and where they sit in the file (for pread by the disk tier). Filled by the
// safetensors and GGUF readers; the model loader maps names to canonical ones on top of it.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/mapped_file.h"

namespace moenav {

struct TensorInfo {
  std::string name;           // as stored in the file
  TensorView view;            // dtype, outer-first shape, pointer into the mapping
  std::string file;           // path of the file holding the bytes
  int64_t file_offset = 0;    // absolute byte offset of the data in that file
  int64_t bytes = 0;
};

class WeightIndex {
 public:
  void add_file(std::shared_ptr<MappedFile> file) { files_.push_back(std::move(file)); }
  // Returns an error if the name is already present (duplicate across shards).
  Status add_tensor(TensorInfo info);

  // Drops a tensor the loader replaced by derived ones (a fused layout split at load).
  void remove(const std::string& name) { tensors_.erase(name); }
  const TensorInfo* find(const std::string& name) const;
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::vector<std::shared_ptr<MappedFile>>& files() const { return files_; }

 private:
  std::vector<std::shared_ptr<MappedFile>> files_;
  std::map<std::string, TensorInfo> tensors_;
};

}  // namespace moenav
