// Bit-compatibility with llama.cpp on a real file: every Q8_0 tensor of the tiny-mixtral GGUF
// (written by llama.cpp's tools), dequantized and re-quantized with our reference quantizer,
// reproduces the file's blocks byte for byte. Needs ../shared (skipped without it).
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "io/gguf.h"
#include "quant/quant.h"
#include "test_paths.h"

namespace moenav {
namespace {

constexpr const char* kModel = "models/tiny-mixtral/llama.cpp/tiny-mixtral-q8_0.gguf";

TEST(QuantGguf, Q8_0TensorsRequantizeByteForByte) {
  MOENAV_REQUIRE_SHARED(kModel);
  Expected<GgufFile> file = GgufFile::open(testing::shared_path(kModel));
  ASSERT_TRUE(file.ok()) << file.error();
  int q8_tensors = 0;
  int64_t blocks = 0;
  for (const auto& [name, info] : file->weights().tensors()) {
    if (info.view.dtype != DType::Q8_0) continue;
    ++q8_tensors;
    const TensorView& view = info.view;
    std::vector<float> values(static_cast<size_t>(view.cols()));
    std::vector<uint8_t> again(static_cast<size_t>(view.row_bytes()));
    for (int64_t row = 0; row < view.rows(); ++row) {
      quant::dequantize_row(DType::Q8_0, view.row(row), values.data(), view.cols());
      quant::quantize_row(DType::Q8_0, values.data(), again.data(), view.cols());
      ASSERT_EQ(std::memcmp(again.data(), view.row(row), again.size()), 0)
          << name << " row " << row << " differs after dequantize + quantize";
      blocks += view.cols() / 32;
    }
  }
  EXPECT_GT(q8_tensors, 0) << "no Q8_0 tensor in " << kModel;
  std::printf("%d Q8_0 tensors, %lld blocks reproduced\n", q8_tensors,
              static_cast<long long>(blocks));
}

}  // namespace
}  // namespace moenav
