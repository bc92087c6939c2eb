// Per-sequence key/value cache: for each layer, [positions, kv_dim] keys and values in f32,
// grown on demand up to the context length so short requests stay small.
#pragma once

#include <cstdint>
#include <vector>

#include "core/check.h"

namespace moenav {

class KvCache {
 public:
  KvCache(int64_t n_layers, int64_t kv_dim, int64_t context)
      : kv_dim_(kv_dim), context_(context), keys_(n_layers), values_(n_layers) {}

  int64_t context() const { return context_; }
  int64_t kv_dim() const { return kv_dim_; }
  int64_t bytes() const { return 2 * static_cast<int64_t>(keys_.size()) * capacity_ * kv_dim_ * 4; }

  // Makes room for positions [0, positions).
  void reserve(int64_t positions) {
    MOENAV_CHECK(positions <= context_);
    if (positions <= capacity_) return;
    int64_t capacity = capacity_ == 0 ? 256 : capacity_;
    while (capacity < positions) capacity *= 2;
    capacity_ = capacity < context_ ? capacity : context_;
    for (size_t layer = 0; layer < keys_.size(); ++layer) {
      keys_[layer].resize(static_cast<size_t>(capacity_ * kv_dim_));
      values_[layer].resize(static_cast<size_t>(capacity_ * kv_dim_));
    }
  }

  float* keys(int64_t layer, int64_t position) {
    return keys_[static_cast<size_t>(layer)].data() + position * kv_dim_;
  }
  float* values(int64_t layer, int64_t position) {
    return values_[static_cast<size_t>(layer)].data() + position * kv_dim_;
  }

 private:
  int64_t kv_dim_;
  int64_t context_;
  int64_t capacity_ = 0;
  std::vector<std::vector<float>> keys_;    // [n_layers][capacity, kv_dim]
  std::vector<std::vector<float>> values_;  // [n_layers][capacity, kv_dim]
};

}  // namespace moenav
