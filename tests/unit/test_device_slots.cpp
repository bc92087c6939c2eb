// plan_device_slots: how many device expert slots each placement.expert_cache.size gives (the
// CUDA decoder's expert cache; host-side arithmetic, so it runs without a GPU).
#include <gtest/gtest.h>

#include <vector>

#include "runtime/device_expert_cache.h"

namespace moenav {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

DeviceSlotInputs inputs() {
  DeviceSlotInputs in;
  in.budget_bytes = 100 * kMiB;
  in.resident_bytes = 10 * kMiB;
  in.reserve_bytes = 20 * kMiB;
  in.slot_bytes = 1 * kMiB;
  in.n_moe_layers = 10;
  in.n_experts = 8;
  return in;
}

TEST(DeviceSlots, AllKeepsEveryExpertOnTheDevice) {
  auto plan = plan_device_slots("all", inputs());
  ASSERT_TRUE(plan.ok());
  EXPECT_FALSE(plan->cached);
}

TEST(DeviceSlots, AutoTakesWhatTheBudgetLeaves) {
  // 100 - 10 - 20 - 1 (staging) = 69 MiB over 10 layers of 1 MiB slots: 6 per layer.
  auto plan = plan_device_slots("auto", inputs());
  ASSERT_TRUE(plan.ok()) << plan.error();
  EXPECT_TRUE(plan->cached);
  EXPECT_EQ(plan->slots_per_layer, 6);
  EXPECT_EQ(plan->slots, 69);  // the global scope pools them all
  EXPECT_EQ(plan->slot_bytes, kMiB);
  DeviceSlotInputs roomy = inputs();
  roomy.budget_bytes = 200 * kMiB;  // 169 MiB: all 8 experts of every layer fit
  EXPECT_FALSE(plan_device_slots("auto", roomy)->cached);
  DeviceSlotInputs unknown = inputs();
  unknown.budget_bytes = 0;  // no budget given: nothing to fit
  EXPECT_FALSE(plan_device_slots("auto", unknown)->cached);
  DeviceSlotInputs lowbit = inputs();
  lowbit.miss_bytes = 20 * kMiB;  // miss.policy lowbit's copies: 49 MiB left, 4 per layer
  auto with_copies = plan_device_slots("auto", lowbit);
  ASSERT_TRUE(with_copies.ok()) << with_copies.error();
  EXPECT_EQ(with_copies->slots_per_layer, 4);
  EXPECT_EQ(with_copies->slots, 49);
}

TEST(DeviceSlots, CountsAndByteSizes) {
  auto count = plan_device_slots("3", inputs());
  ASSERT_TRUE(count.ok());
  EXPECT_TRUE(count->cached);
  EXPECT_EQ(count->slots_per_layer, 3);
  EXPECT_EQ(count->slots, 30);
  EXPECT_FALSE(plan_device_slots("8", inputs())->cached);  // every expert: no cache
  auto bytes = plan_device_slots("40MiB", inputs());
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(bytes->slots_per_layer, 4);
}

// Under one slot per layer, or a size of 0: no expert on the device (every use a miss).
TEST(DeviceSlots, ZeroSlotsKeepEveryExpertOffTheDevice) {
  DeviceSlotInputs tight = inputs();
  tight.budget_bytes = 35 * kMiB;  // 4 MiB left: under one slot per layer
  for (auto plan : {plan_device_slots("auto", tight), plan_device_slots("0", inputs()),
                    plan_device_slots("5MiB", inputs())}) {
    ASSERT_TRUE(plan.ok()) << plan.error();
    EXPECT_TRUE(plan->cached);
    EXPECT_EQ(plan->slots_per_layer, 0);
  }
}

TEST(DeviceSlots, TooSmallOrMalformedSaysWhat) {
  DeviceSlotInputs tight = inputs();
  tight.budget_bytes = 30 * kMiB;  // 10 + 20 + 1 (staging) MiB needed besides the slots
  auto plan = plan_device_slots("auto", tight);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.error().find("31.00 MiB"), std::string::npos) << plan.error();
  EXPECT_NE(plan.error().find("--gpu-memory"), std::string::npos) << plan.error();
  EXPECT_FALSE(plan_device_slots("99999999999999999999999", inputs()).ok());  // no overflow
  auto garbage = plan_device_slots("lots", inputs());
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(garbage.error().find("'lots'"), std::string::npos) << garbage.error();
}

// Issue 7's machine: an expert fetched in 1.9 ms (55 GB/s), computed on the CPU in 1.16 ms.
TEST(MissService, OneMissIsSplitBetweenPcieAndTheCpu) {
  const MissCost miss{1.9e-3, 1.16e-3};
  // Split: max(1.9 / 3, 1.16 * 2 / 3) = 0.77 ms, against 1.16 (cpu) and 1.9 (fetch).
  EXPECT_EQ(choose_miss_service(std::vector<MissCost>{miss}, 2), std::vector<MissService>{MissService::Split});
  // Two: both split (1.27, 1.55 ms); a third can no longer split and goes where it ends soonest:
  // the CPU (2.71 ms) rather than PCIe (3.17 ms).
  const std::vector<MissCost> three(3, miss);
  EXPECT_EQ(choose_miss_service(three, 2),
            (std::vector<MissService>{MissService::Split, MissService::Split, MissService::Cpu}));
  // No split allowed: the CPU first, then fetch beside it.
  EXPECT_EQ(choose_miss_service(std::vector<MissCost>(2, miss), 0),
            (std::vector<MissService>{MissService::Cpu, MissService::Fetch}));
}

TEST(MissService, OneSidedRatesUseOneSide) {
  // A slow CPU (a 4-row step on one core): everything fetched.
  const std::vector<MissCost> slow_cpu(3, MissCost{1e-3, 50e-3});
  EXPECT_EQ(choose_miss_service(slow_cpu, 2), std::vector<MissService>(3, MissService::Fetch));
  // A slow link: everything on the CPU.
  const std::vector<MissCost> slow_link(3, MissCost{50e-3, 1e-3});
  EXPECT_EQ(choose_miss_service(slow_link, 2), std::vector<MissService>(3, MissService::Cpu));
  EXPECT_TRUE(choose_miss_service({}, 2).empty());
}

}  // namespace
}  // namespace moenav
