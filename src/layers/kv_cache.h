// Per-sequence key/value cache, grown on demand up to the context length so short requests stay
// small. Two layouts share it:
//   GQA: for each layer, keys and values [positions, kv_dim] in f32;
//   MLA (DeepSeek): for each layer, one row [positions, kv_lora_rank + qk_rope] holding the
//        normalized latent and the rotated shared key, and no values: the per-head keys and
//        values are never materialized (the queries absorb kv_b, see attention_mla.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "core/check.h"

namespace moenav {

class KvCache {
 public:
  // GQA: keys and values of kv_dim floats per position.
  KvCache(int64_t n_layers, int64_t kv_dim, int64_t context)
      : KvCache(n_layers, kv_dim, kv_dim, context) {}
  // Any layout: key_width and value_width floats per position (MLA: latent width and 0).
  KvCache(int64_t n_layers, int64_t key_width, int64_t value_width, int64_t context)
      : key_width_(key_width),
        value_width_(value_width),
        context_(context),
        keys_(n_layers),
        values_(n_layers) {}

  int64_t context() const { return context_; }
  int64_t kv_dim() const { return key_width_; }
  int64_t key_width() const { return key_width_; }
  int64_t value_width() const { return value_width_; }
  // State bytes per position and layer.
  int64_t bytes_per_token_per_layer() const { return (key_width_ + value_width_) * 4; }
  int64_t bytes() const {
    return static_cast<int64_t>(keys_.size()) * capacity_ * bytes_per_token_per_layer();
  }

  // Makes room for positions [0, positions).
  void reserve(int64_t positions) {
    MOENAV_CHECK(positions <= context_);
    if (positions <= capacity_) return;
    int64_t capacity = capacity_ == 0 ? 256 : capacity_;
    while (capacity < positions) capacity *= 2;
    capacity_ = capacity < context_ ? capacity : context_;
    for (size_t layer = 0; layer < keys_.size(); ++layer) {
      keys_[layer].resize(static_cast<size_t>(capacity_ * key_width_));
      values_[layer].resize(static_cast<size_t>(capacity_ * value_width_));
    }
  }

  float* keys(int64_t layer, int64_t position) {
    return keys_[static_cast<size_t>(layer)].data() + position * key_width_;
  }
  float* values(int64_t layer, int64_t position) {
    return values_[static_cast<size_t>(layer)].data() + position * value_width_;
  }

 private:
  int64_t key_width_;
  int64_t value_width_;
  int64_t context_;
  int64_t capacity_ = 0;
  std::vector<std::vector<float>> keys_;    // [n_layers][capacity, key_width]
  std::vector<std::vector<float>> values_;  // [n_layers][capacity, value_width]
};

}  // namespace moenav
