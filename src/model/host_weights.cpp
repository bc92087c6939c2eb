#include "model/host_weights.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <unordered_set>

#include "model/weight_conversion.h"

namespace moenav {
namespace {

constexpr int64_t kChunkBytes = int64_t{8} << 20;  // a thread's unit of copying

// Each tensor starts on a cache line of its own.
int64_t padded(int64_t bytes) { return (bytes + 63) / 64 * 64; }

std::unordered_set<const TensorView*> expert_views(const ModelWeights& weights) {
  std::unordered_set<const TensorView*> views;
  for (const LayerWeights& layer : weights.layers) {
    for (const FfnWeights& expert : layer.experts) views.insert({&expert.gate, &expert.up, &expert.down});
  }
  return views;
}

// The mapped file that holds the tensor's bytes, or null.
const MappedFile* mapping_of(const WeightIndex& index, const TensorView& tensor) {
  const auto* data = static_cast<const uint8_t*>(tensor.data);
  for (const auto& file : index.files()) {
    if (data >= file->data() && data + tensor.bytes() <= file->data() + file->size()) return file.get();
  }
  return nullptr;
}

struct Copy {
  std::string name;
  TensorView source;
  const MappedFile* file = nullptr;
  std::vector<TensorView*> views;  // the chosen views inside source
  uint8_t* destination = nullptr;
};

// pread() rather than memcpy from the mapping: the kernel copies from the page cache without a
// page fault per 4 KiB of the mapping, and the mapping's pages never join this process's resident
// set (so peak RSS stays the weights once, not twice).
Status read_chunk(const Copy& copy, int64_t at, int64_t bytes) {
  const int64_t offset = static_cast<const uint8_t*>(copy.source.data) - copy.file->data() + at;
  for (int64_t done = 0; done < bytes;) {
    const ssize_t got = ::pread(copy.file->fd(), copy.destination + at + done, static_cast<size_t>(bytes - done),
                                static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      return Status::errorf("{}: cannot read {} bytes at offset {} (tensor '{}'): {}", copy.file->path(),
                            bytes - done, offset + done, copy.name, got < 0 ? std::strerror(errno) : "end of file");
    }
    done += got;
  }
  return ok_status();
}

}  // namespace

Expected<int64_t> copy_weights_to_host_memory(Model& model, HostCopy which, ThreadPool& pool) {
  if (which == HostCopy::None) return int64_t{0};
  std::vector<TensorView*> views = matrix_views(model.weights);
  const std::unordered_set<const TensorView*> experts = expert_views(model.weights);
  std::erase_if(views, [&](const TensorView* view) {
    const bool expert = experts.count(view) > 0;
    return (which == HostCopy::Experts && !expert) || (which == HostCopy::NonExperts && expert);
  });
  // Whole tensors of the mapping that hold a chosen view, laid out in one buffer.
  std::vector<Copy> copies;
  int64_t total = 0;
  for (const auto& [name, info] : model.tensors.tensors()) {
    const MappedFile* file = mapping_of(model.tensors, info.view);
    if (file == nullptr) continue;
    Copy copy{name, info.view, file, {}, nullptr};
    for (TensorView* view : views) {
      if (view_inside(*view, info.view)) copy.views.push_back(view);
    }
    if (copy.views.empty()) continue;
    copies.push_back(std::move(copy));
    total += padded(info.view.bytes());
  }
  if (copies.empty()) return int64_t{0};
  HostBuffer* buffer = nullptr;
  try {
    buffer = &model.owned_tensors.emplace_back(total);
  } catch (const std::bad_alloc&) {
    return Status::errorf("{}: cannot allocate {} bytes of host memory for the weights (weights.load = "
                          "\"mmap\" computes from the file mapping instead)", model.path, total);
  }
  std::vector<std::pair<size_t, int64_t>> chunks;  // (copy, offset)
  int64_t offset = 0;
  for (size_t i = 0; i < copies.size(); ++i) {
    copies[i].destination = buffer->data() + offset;
    const int64_t bytes = copies[i].source.bytes();
    for (int64_t at = 0; at < bytes; at += kChunkBytes) chunks.emplace_back(i, at);
    offset += padded(bytes);
  }
  std::vector<Status> failures(static_cast<size_t>(pool.size()));
  pool.run([&](int thread, int n_threads) {
    Status& failure = failures[static_cast<size_t>(thread)];
    for (size_t c = static_cast<size_t>(thread); c < chunks.size() && failure.ok(); c += static_cast<size_t>(n_threads)) {
      const auto [i, at] = chunks[c];
      failure = read_chunk(copies[i], at, std::min(kChunkBytes, copies[i].source.bytes() - at));
    }
  });
  for (const Status& failure : failures) MOENAV_RETURN_IF_ERROR(failure);
  for (const Copy& copy : copies) {
    for (TensorView* view : copy.views) {
      view->data = copy.destination + (static_cast<const uint8_t*>(view->data) -
                                       static_cast<const uint8_t*>(copy.source.data));
    }
    TensorInfo info = *model.tensors.find(copy.name);
    info.view.data = copy.destination;  // file and file_offset still say where the bytes came from
    model.tensors.remove(copy.name);
    MOENAV_RETURN_IF_ERROR(model.tensors.add_tensor(std::move(info)));
  }
  return total;
}

}  // namespace moenav
