// Per-sequence key/value cache, grown on demand up to the context length so short requests stay
// small. Two layouts share it:
//   GQA: for each layer, values [positions, kv_dim] and keys in blocks of kKeyBlock positions,
//        [blocks, kv_heads, head_dim, kKeyBlock]: each block is already in the transposed form
//        the attention kernel multiplies with (backend/cpu/attention.h), so no step re-arranges
//        the keys a sequence has cached. Elements are f32 or f16 (kv_cache.type), halving the
//        bytes a long context costs and every decode step reads;
//   MLA (DeepSeek): for each layer, one f32 row [positions, kv_lora_rank + qk_rope] holding the
//        normalized latent and the rotated shared key, and no values: the per-head keys and
//        values are never materialized (the queries absorb kv_b, see attention_mla.cpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "backend/cpu/attention.h"
#include "core/check.h"
#include "core/dtype.h"
#include "quant/quant.h"

namespace moenav {

class KvCache {
 public:
  struct Gqa {
    int64_t n_kv_heads, head_dim;
    DType type = DType::F32;  // F32 or F16
  };
  struct Rows {
    int64_t key_width, value_width;
  };
  KvCache(int64_t n_layers, Gqa layout, int64_t context)
      : KvCache(n_layers, layout.n_kv_heads * layout.head_dim, layout.n_kv_heads * layout.head_dim,
                context) {
    MOENAV_CHECK(layout.type == DType::F32 || layout.type == DType::F16);
    head_dim_ = layout.head_dim;
    type_ = layout.type;
  }
  KvCache(int64_t n_layers, Rows layout, int64_t context)
      : KvCache(n_layers, layout.key_width, layout.value_width, context) {}

  int64_t context() const { return context_; }
  int64_t kv_dim() const { return key_width_; }
  DType type() const { return type_; }
  bool blocked_keys() const { return head_dim_ > 0; }
  int64_t bytes() const {
    int64_t total = 0;
    for (size_t layer = 0; layer < keys_.size(); ++layer) {
      total += static_cast<int64_t>(keys_[layer].size() + values_[layer].size());
    }
    return total;
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
      keys_[layer].resize(static_cast<size_t>(key_positions * key_width_ * element_bytes()));
      values_[layer].resize(static_cast<size_t>(capacity_ * value_width_ * element_bytes()));
    }
  }

  // Writes the key row [key_width] of one position (GQA: kv heads of head_dim each).
  void store_key(int64_t layer, int64_t position, const float* row) {
    MOENAV_CHECK(position < capacity_);
    uint8_t* keys = keys_[static_cast<size_t>(layer)].data();
    if (!blocked_keys()) {
      std::memcpy(keys + position * key_width_ * 4, row, static_cast<size_t>(key_width_ * 4));
      return;
    }
    const int64_t first = (position / kBlock) * key_block_stride() + position % kBlock;
    // Element i = head * head_dim + d of the row goes to lane `position % kBlock` of its row.
    for (int64_t i = 0; i < key_width_; ++i) store(keys, first + i * kBlock, row[i]);
  }
  // Writes the value row [value_width] of one position.
  void store_value(int64_t layer, int64_t position, const float* row) {
    MOENAV_CHECK(position < capacity_);
    uint8_t* values = values_[static_cast<size_t>(layer)].data();
    for (int64_t i = 0; i < value_width_; ++i) store(values, position * value_width_ + i, row[i]);
  }

  // MLA: the cached row of one position.
  const float* key_row(int64_t layer, int64_t position) const {
    MOENAV_CHECK(!blocked_keys());
    return reinterpret_cast<const float*>(keys_[static_cast<size_t>(layer)].data()) +
           position * key_width_;
  }
  // GQA, as cpu::AttentionHeadArgs takes them (elements of type()): block 0 of one KV head's
  // keys, [head_dim, kKeyBlock], block b key_block_stride() elements further; the head's value
  // at position 0, position j kv_dim() elements further.
  const void* key_blocks(int64_t layer, int64_t kv_head) const {
    MOENAV_CHECK(blocked_keys());
    const int64_t offset = kv_head * head_dim_ * kBlock * element_bytes();
    return keys_[static_cast<size_t>(layer)].data() + offset;
  }
  int64_t key_block_stride() const { return key_width_ * kBlock; }
  const void* head_values(int64_t layer, int64_t kv_head) const {
    MOENAV_CHECK(blocked_keys());
    return values_[static_cast<size_t>(layer)].data() + kv_head * head_dim_ * element_bytes();
  }
  // Points args' cache fields (kv_type, keys, values and their strides) at one KV head.
  void bind_head(int64_t layer, int64_t kv_head, cpu::AttentionHeadArgs& args) const {
    args.kv_type = type_;
    args.key_blocks = key_blocks(layer, kv_head);
    args.key_block_stride = key_block_stride();
    args.values = head_values(layer, kv_head);
    args.value_stride = kv_dim();
  }

 private:
  static constexpr int64_t kBlock = cpu::kKeyBlock;
  KvCache(int64_t n_layers, int64_t key_width, int64_t value_width, int64_t context)
      : key_width_(key_width),
        value_width_(value_width),
        context_(context),
        keys_(n_layers),
        values_(n_layers) {}

  int64_t element_bytes() const { return type_ == DType::F16 ? 2 : 4; }
  void store(uint8_t* base, int64_t index, float x) const {
    if (type_ == DType::F16) {
      // Saturated to the largest half: a key or value beyond it would become inf, and one inf
      // turns a whole attention row into NaN.
      constexpr float kHalfMax = 65504.0f;
      const uint16_t half = quant::fp32_to_fp16(std::clamp(x, -kHalfMax, kHalfMax));
      std::memcpy(base + index * 2, &half, 2);
    } else {
      std::memcpy(base + index * 4, &x, 4);
    }
  }

  int64_t key_width_;
  int64_t value_width_;
  int64_t head_dim_ = 0;  // > 0: GQA, keys in blocks
  DType type_ = DType::F32;
  int64_t context_;
  int64_t capacity_ = 0;
  std::vector<std::vector<uint8_t>> keys_;    // [n_layers][bytes] (see the layouts above)
  std::vector<std::vector<uint8_t>> values_;  // [n_layers][capacity, value_width] elements
};

}  // namespace moenav
