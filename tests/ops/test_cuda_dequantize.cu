// The CUDA kernels' chunk dequantizer (backend/cuda/dequantize_chunk.h) run on the host: every
// format's bit layout against quant::dequantize_row, exactly (the same float operations in the
// same order). Built only with nvcc; needs no GPU, so it checks the layouts on every CUDA build.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "backend/cuda/dequantize_chunk.h"
#include "quant/quant.h"

namespace moenav {
namespace {

template <DType kType>
void expect_chunks_equal_reference() {
  constexpr int64_t kCols = 1024;  // 4 super-blocks, 32 chunks
  std::mt19937 rng(static_cast<uint32_t>(kType) + 1);
  std::normal_distribution<float> normal(0.0f, 0.7f);
  std::vector<float> source(kCols), reference(kCols), ours(kCols);
  for (float& v : source) v = normal(rng);
  // f32 chunks are read as float4: keep the row 16-byte aligned.
  std::vector<float> storage(static_cast<size_t>(dtype_bytes(kType, kCols) / 4 + 4));
  auto* row = reinterpret_cast<uint8_t*>(storage.data());
  quant::quantize_row(kType, source.data(), row, kCols);
  quant::dequantize_row(kType, row, reference.data(), kCols);
  for (int64_t chunk = 0; chunk < kCols / cuda::kChunk; ++chunk)
    cuda::dequantize_chunk<kType>(row, chunk, ours.data() + chunk * cuda::kChunk);
  for (int64_t i = 0; i < kCols; ++i) {
    ASSERT_EQ(ours[static_cast<size_t>(i)], reference[static_cast<size_t>(i)])
        << dtype_name(kType) << " element " << i;
  }
}

TEST(CudaDequantizeChunk, F32) { expect_chunks_equal_reference<DType::F32>(); }
TEST(CudaDequantizeChunk, F16) { expect_chunks_equal_reference<DType::F16>(); }
TEST(CudaDequantizeChunk, BF16) { expect_chunks_equal_reference<DType::BF16>(); }
TEST(CudaDequantizeChunk, Q8_0) { expect_chunks_equal_reference<DType::Q8_0>(); }
TEST(CudaDequantizeChunk, Q4_0) { expect_chunks_equal_reference<DType::Q4_0>(); }
TEST(CudaDequantizeChunk, Q4_K) { expect_chunks_equal_reference<DType::Q4_K>(); }
TEST(CudaDequantizeChunk, Q5_K) { expect_chunks_equal_reference<DType::Q5_K>(); }
TEST(CudaDequantizeChunk, Q6_K) { expect_chunks_equal_reference<DType::Q6_K>(); }

}  // namespace
}  // namespace moenav
