// Per-sequence key/value cache, grown on demand up to the context length so short requests stay
// small. Two layouts share it:
//   GQA: for each layer, values [positions, kv_dim] and keys in blocks of kKeyBlock positions,
//        [blocks, kv_heads, head_dim, kKeyBlock]: each block is already in the transposed form
//        the attention kernel multiplies with (backend/cpu/attention.h), so no step re-arranges
//        the keys a sequence has cached;
//   MLA (DeepSeek): for each layer, one row [positions, kv_lora_rank + qk_rope] holding the
//        normalized latent and the rotated shared key, and no values: the per-head keys and
//        values are never materialized (the queries absorb kv_b, see attention_mla.cpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "backend/cpu/attention.h"
#include "core/check.h"

namespace moenav {

class KvCache {
 public:
  struct Gqa {
    int64_t n_kv_heads, head_dim;
  };
  struct Rows {
    int64_t key_width, value_width;
  };
  KvCache(int64_t n_layers, Gqa layout, int64_t context)
      : KvCache(n_layers, layout.n_kv_heads * layout.head_dim, layout.n_kv_heads * layout.head_dim,
                context) {
    head_dim_ = layout.head_dim;
  }
  KvCache(int64_t n_layers, Rows layout, int64_t context)
      : KvCache(n_layers, layout.key_width, layout.value_width, context) {}

  int64_t context() const { return context_; }
  int64_t kv_dim() const { return key_width_; }
  int64_t key_width() const { return key_width_; }
  int64_t value_width() const { return value_width_; }
  bool blocked_keys() const { return head_dim_ > 0; }
  // State bytes per position and layer.
  int64_t bytes_per_token_per_layer() const { return (key_width_ + value_width_) * 4; }
  int64_t bytes() const {
    int64_t floats = 0;
    for (size_t layer = 0; layer < keys_.size(); ++layer) {
      floats += static_cast<int64_t>(keys_[layer].size() + values_[layer].size());
    }
    return floats * 4;
  }

  // Makes room for positions [0, positions).
  void reserve(int64_t positions) {
    MOENAV_CHECK(positions <= context_);
    if (positions <= capacity_) return;
    int64_t capacity = capacity_ == 0 ? 256 : capacity_;
    while (capacity < positions) capacity *= 2;
    capacity_ = capacity < context_ ? capacity : context_;
    const int64_t key_positions =
        blocked_keys() ? (capacity_ + kBlock - 1) / kBlock * kBlock : capacity_;
    for (size_t layer = 0; layer < keys_.size(); ++layer) {
      keys_[layer].resize(static_cast<size_t>(key_positions * key_width_));
      values_[layer].resize(static_cast<size_t>(capacity_ * value_width_));
    }
  }

  // Writes the key row [key_width] of one position (GQA: kv heads of head_dim each).
  void store_key(int64_t layer, int64_t position, const float* row) {
    MOENAV_CHECK(position < capacity_);
    float* keys = keys_[static_cast<size_t>(layer)].data();
    if (!blocked_keys()) {
      std::copy(row, row + key_width_, keys + position * key_width_);
      return;
    }
    float* block = keys + (position / kBlock) * key_block_stride() + position % kBlock;
    for (int64_t i = 0; i < key_width_; ++i) block[i * kBlock] = row[i];  // i = head * D + d
  }
  // MLA: the cached row of one position.
  const float* key_row(int64_t layer, int64_t position) const {
    MOENAV_CHECK(!blocked_keys());
    return keys_[static_cast<size_t>(layer)].data() + position * key_width_;
  }
  // GQA: block 0 of one KV head, [head_dim, kKeyBlock]; block b is key_block_stride() further.
  const float* key_blocks(int64_t layer, int64_t kv_head) const {
    MOENAV_CHECK(blocked_keys());
    return keys_[static_cast<size_t>(layer)].data() + kv_head * head_dim_ * kBlock;
  }
  int64_t key_block_stride() const { return key_width_ * kBlock; }

  float* values(int64_t layer, int64_t position) {
    return values_[static_cast<size_t>(layer)].data() + position * value_width_;
  }

 private:
  static constexpr int64_t kBlock = cpu::kKeyBlock;
  KvCache(int64_t n_layers, int64_t key_width, int64_t value_width, int64_t context)
      : key_width_(key_width),
        value_width_(value_width),
        context_(context),
        keys_(n_layers),
        values_(n_layers) {}

  int64_t key_width_;
  int64_t value_width_;
  int64_t head_dim_ = 0;  // > 0: GQA, keys in blocks
  int64_t context_;
  int64_t capacity_ = 0;
  std::vector<std::vector<float>> keys_;    // [n_layers][...] (see the layouts above)
  std::vector<std::vector<float>> values_;  // [n_layers][capacity, value_width]
};

}  // namespace moenav
