// Host memory for weights: HostBuffer's alignment and ownership, and weights.load "copy", which
// must move exactly the chosen matrices out of the file mapping, byte for byte, and change no
// logit.
#include <cstdint>
#include <cstring>

#include <gtest/gtest.h>

#include "core/host_buffer.h"
#include "model/host_weights.h"
#include "model/weight_conversion.h"
#include "moenav/engine.h"
#include "test_paths.h"

namespace moenav {
namespace {

std::string tiny_path() { return testing::source_path("models/tiny-mixtral"); }

bool in_a_mapping(const Model& model, const TensorView& view) {
  const auto* data = static_cast<const uint8_t*>(view.data);
  for (const auto& file : model.tensors.files()) {
    if (data >= file->data() && data < file->data() + file->size()) return true;
  }
  return false;
}

bool is_expert(const Model& model, const TensorView* view) {
  for (const LayerWeights& layer : model.weights.layers) {
    for (const FfnWeights& expert : layer.experts) {
      if (view == &expert.gate || view == &expert.up || view == &expert.down) return true;
    }
  }
  return false;
}

TEST(HostBuffer, PageAlignedZeroedAndHugePageAlignedWhenLarge) {
  HostBuffer small(100);
  EXPECT_EQ(small.size(), 100);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small.data()) % 4096, 0u);
  EXPECT_EQ(small.data()[99], 0);
  HostBuffer large(kHugePageBytes * 3 + 5);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(large.data()) % static_cast<uintptr_t>(kHugePageBytes), 0u);
  large.data()[large.size() - 1] = 7;  // the whole size is writable
  HostBuffer moved(std::move(large));
  EXPECT_EQ(large.data(), nullptr);
  EXPECT_EQ(large.size(), 0);
  EXPECT_EQ(moved.data()[moved.size() - 1], 7);
  small = std::move(moved);
  EXPECT_EQ(small.size(), kHugePageBytes * 3 + 5);
}

TEST(HostWeights, CopiesTheChosenMatricesByteForByte) {
  for (HostCopy which : {HostCopy::All, HostCopy::Experts, HostCopy::NonExperts}) {
    auto mapped = load_model(tiny_path());
    auto copied = load_model(tiny_path());
    ASSERT_TRUE(mapped.ok() && copied.ok());
    ThreadPool pool(2);
    auto bytes = copy_weights_to_host_memory(**copied, which, pool);
    ASSERT_TRUE(bytes.ok()) << bytes.error();
    EXPECT_GT(*bytes, 0);
    const std::vector<TensorView*> before = matrix_views((*mapped)->weights);
    const std::vector<TensorView*> after = matrix_views((*copied)->weights);
    ASSERT_EQ(before.size(), after.size());
    for (size_t i = 0; i < after.size(); ++i) {
      const bool expert = is_expert(**copied, after[i]);
      const bool chosen = which == HostCopy::All || (which == HostCopy::Experts) == expert;
      EXPECT_EQ(in_a_mapping(**copied, *after[i]), !chosen) << "view " << i;
      ASSERT_EQ(after[i]->bytes(), before[i]->bytes());
      EXPECT_EQ(std::memcmp(after[i]->data, before[i]->data, static_cast<size_t>(after[i]->bytes())), 0);
    }
  }
}

TEST(HostWeights, CopiedWeightsGiveTheMappedLogits) {
  EngineConfig copy, mapped;
  mapped.weights.load = "mmap";
  auto a = Engine::create(tiny_path(), copy);
  auto b = Engine::create(tiny_path(), mapped);
  ASSERT_TRUE(a.ok() && b.ok());
  const std::vector<int32_t> tokens = {1, 415, 3340, 302, 272, 2990};
  auto session_a = (*a)->new_session();
  auto session_b = (*b)->new_session();
  auto logits_a = (*a)->evaluate(*session_a, tokens, /*all_logits=*/true);
  auto logits_b = (*b)->evaluate(*session_b, tokens, /*all_logits=*/true);
  ASSERT_TRUE(logits_a.ok() && logits_b.ok());
  EXPECT_EQ(*logits_a, *logits_b);
  // And "copy" did copy: no matrix of the copying engine is read from the mapping.
  for (const TensorView* view : matrix_views(const_cast<ModelWeights&>((*a)->model().weights))) {  // read only
    EXPECT_FALSE(in_a_mapping((*a)->model(), *view));
  }
}

}  // namespace
}  // namespace moenav
