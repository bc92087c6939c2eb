// Rank-ordered BPE merges over token ids (GPT-2 / Hugging Face semantics): repeatedly merge the
// adjacent pair with the lowest rank, the leftmost one on ties, until no pair has a merge.
// A heap of candidate pairs with lazy invalidation keeps a word of n symbols at O(n log n).
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace moenav {

class MergeTable {
 public:
  // Rank is the order of insertion; a pair added twice keeps its first (better) rank.
  void add(int32_t left, int32_t right, int32_t result);
  size_t size() const { return merges_.size(); }

  // Merges `symbols` in place.
  void apply(std::vector<int32_t>& symbols) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  static uint64_t key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  const Merge* find(int32_t left, int32_t right) const {
    auto found = merges_.find(key(left, right));
    return found == merges_.end() ? nullptr : &found->second;
  }

  std::unordered_map<uint64_t, Merge> merges_;
};

}  // namespace moenav
