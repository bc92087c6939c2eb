// The cost model's memory prediction: resident weights plus the KV cache the workload fills, the
// cache's element size taken from kv_cache.type.
#include <gtest/gtest.h>

#include "model/model_config.h"
#include "tune/cost_model.h"

namespace moenav::tune {
namespace {

ModelConfig small_model() {
  ModelConfig model;
  model.n_layers = 3;
  model.layer_is_moe = {true, true, true};
  model.n_experts = 4;
  model.n_experts_used = 2;
  model.n_kv_heads = 2;
  model.head_dim = 16;
  model.context_length = 256;
  return model;
}

KernelTimes flat_kernels() {
  KernelTimes times;
  times.rows = {1, 64};
  times.expert = {1e-5, 1e-4};
  times.dense = {2e-5, 2e-4};
  times.head = 1e-5;
  times.expert_bytes = 1000;
  times.weight_bytes = 100'000;
  return times;
}

TEST(TuneCostModel, KvCacheMemoryFollowsItsElementType) {
  CostModel model;
  model.set_model(small_model());
  model.add_kernels(CostModel::speed_key(EngineConfig{}), flat_kernels());
  BenchOptions workload;
  workload.prompt_tokens = 40;
  workload.gen_tokens = 24;
  Point f32;
  Point f16;
  f16.config.kv_cache.type = "f16";
  const double f32_bytes = model.raw_predict(f32, workload).memory_bytes;
  const double f16_bytes = model.raw_predict(f16, workload).memory_bytes;
  // 64 positions x 3 layers x (keys + values of 2 heads x 16) elements.
  const double elements = 64.0 * 3 * 2 * 2 * 16;
  EXPECT_DOUBLE_EQ(f32_bytes - f16_bytes, elements * 2);
  EXPECT_DOUBLE_EQ(f32_bytes, 100'000 + elements * 4);  // all experts resident, no offset yet
}

}  // namespace
}  // namespace moenav::tune
