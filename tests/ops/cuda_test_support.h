// What the CUDA op tests share: the CudaTest fixture (a context on device 0, skipping with the
// reason where no device is usable), device upload and download, random inputs and a tolerance
// check relative to the largest expected value.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda.h"

namespace moenav {

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const Status status = cuda::available();
    if (!status.ok()) GTEST_SKIP() << "skipped, no usable CUDA device: " << status.message();
    auto created = cuda::Context::create(0, 0);
    ASSERT_TRUE(created.ok()) << created.error();
    context_ = std::move(created).value();
  }

  template <typename T>
  cuda::DeviceBuffer upload(const std::vector<T>& host) {
    const int64_t bytes = static_cast<int64_t>(host.size() * sizeof(T));
    auto buffer = context_->allocate(bytes, "test data");
    EXPECT_TRUE(buffer.ok()) << buffer.error();
    if (!buffer.ok()) return {};
    const Status status = context_->upload(*buffer, host.data(), bytes);
    EXPECT_TRUE(status.ok()) << status.message();
    return std::move(buffer).value();
  }

  template <typename T>
  std::vector<T> download(const cuda::DeviceBuffer& buffer, size_t n) {
    const Status synced = context_->synchronize();
    EXPECT_TRUE(synced.ok()) << synced.message();
    std::vector<T> host(n);
    const Status status = context_->download(host.data(), buffer, static_cast<int64_t>(n * sizeof(T)));
    EXPECT_TRUE(status.ok()) << status.message();
    return host;
  }

  std::unique_ptr<cuda::Context> context_;
};

inline std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(n);
  for (float& v : values) v = normal(rng);
  return values;
}

inline void expect_close(const std::vector<float>& actual, const std::vector<float>& expected,
                  float relative, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  float largest = 0.0f;
  for (float v : expected) largest = std::max(largest, std::fabs(v));
  for (size_t i = 0; i < actual.size(); ++i) {
    ASSERT_NEAR(actual[i], expected[i], relative * std::max(1.0f, largest)) << what << " at " << i;
  }
}

}  // namespace moenav
