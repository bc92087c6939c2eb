// The merge loop of rank-based BPE. Symbols form a linked list over the original positions; a
// candidate in the heap names its left position and the two ids it saw there, so a candidate made
// stale by a neighbouring merge is recognised and dropped when it is popped.
#include "tokenizer/bpe_merges.h"

#include <queue>

namespace moenav {

void MergeTable::add(int32_t left, int32_t right, int32_t result) {
  merges_.try_emplace(key(left, right), Merge{static_cast<int32_t>(merges_.size()), result});
}

void MergeTable::apply(std::vector<int32_t>& symbols) const {
  const int32_t count = static_cast<int32_t>(symbols.size());
  if (count < 2) return;

  struct Node {
    int32_t id;    // -1 once merged into its left neighbour
    int32_t prev;  // -1 at the start
    int32_t next;  // -1 at the end
  };
  struct Candidate {
    int32_t rank;
    int32_t left;  // position of the left symbol
    int32_t left_id;
    int32_t right_id;
    int32_t result;
  };
  struct Later {
    bool operator()(const Candidate& a, const Candidate& b) const {
      return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
    }
  };

  std::vector<Node> nodes(count);  // [symbols]
  for (int32_t position = 0; position < count; ++position)
    nodes[position] = {symbols[position], position - 1, position + 1 < count ? position + 1 : -1};

  std::priority_queue<Candidate, std::vector<Candidate>, Later> queue;
  const auto consider = [&](int32_t left) {
    if (left < 0 || nodes[left].next < 0) return;
    const int32_t left_id = nodes[left].id;
    const int32_t right_id = nodes[nodes[left].next].id;
    if (const Merge* merge = find(left_id, right_id))
      queue.push({merge->rank, left, left_id, right_id, merge->result});
  };
  for (int32_t position = 0; position + 1 < count; ++position) consider(position);

  while (!queue.empty()) {
    const Candidate candidate = queue.top();
    queue.pop();
    Node& left = nodes[candidate.left];
    if (left.id != candidate.left_id || left.next < 0 || nodes[left.next].id != candidate.right_id)
      continue;  // stale: one side was merged since this pair was queued
    Node& right = nodes[left.next];
    left.id = candidate.result;
    left.next = right.next;
    if (right.next >= 0) nodes[right.next].prev = candidate.left;
    right.id = -1;
    consider(left.prev);
    consider(candidate.left);
  }

  symbols.clear();
  for (int32_t position = 0; position >= 0; position = nodes[position].next)
    symbols.push_back(nodes[position].id);
}

}  // namespace moenav
