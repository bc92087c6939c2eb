#include "io/weight_index.h"

namespace moenav {

Status WeightIndex::add_tensor(TensorInfo info) {
  if (tensors_.count(info.name)) {
    return Status::errorf("{}: tensor '{}' appears twice (also in {})", info.file, info.name,
                          tensors_.at(info.name).file);
  }
  std::string name = info.name;
  tensors_.emplace(std::move(name), std::move(info));
  return ok_status();
}

const TensorInfo* WeightIndex::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

}  // namespace moenav
