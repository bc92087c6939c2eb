#include "experts/lowbit_experts.h"

#include "model/model.h"
#include "quant/quant.h"

namespace moenav {
namespace {

Status check_type(const Model& model, DType type) {
  if (type != DType::Q4_0 && type != DType::Q8_0) {
    return Status::errorf("miss.lowbit_type '{}': low-bit expert copies are q4_0 or q8_0", dtype_name(type));
  }
  const ModelConfig& c = model.config;
  for (int64_t width : {c.hidden, c.expert_ffn}) {
    if (!row_size_valid(type, width)) {
      return Status::errorf("miss.policy = lowbit: expert rows of {} values are not whole {} blocks of {}",
                            width, dtype_name(type), dtype_block_size(type));
    }
  }
  return ok_status();
}

}  // namespace

Expected<int64_t> LowBitExperts::planned_bytes(const Model& model, DType type) {
  MOENAV_RETURN_IF_ERROR(check_type(model, type));
  int64_t total = 0;
  for (const LayerWeights& layer : model.weights.layers) {
    for (const FfnWeights& expert : layer.experts) {
      for (const TensorView* view : {&expert.gate, &expert.up, &expert.down}) {
        total += view->rows() * dtype_bytes(type, view->cols());
      }
    }
  }
  return total;
}

Expected<std::unique_ptr<LowBitExperts>> LowBitExperts::create(const Model& model, DType type) {
  MOENAV_RETURN_IF_ERROR(check_type(model, type));
  auto copies = std::make_unique<LowBitExperts>();
  const ModelConfig& c = model.config;
  copies->n_experts_ = c.n_experts;
  copies->weights_.resize(static_cast<size_t>(c.n_layers * c.n_experts));
  std::vector<float> row;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& layer = model.weights.layers[static_cast<size_t>(l)];
    for (size_t e = 0; e < layer.experts.size(); ++e) {
      FfnWeights copy = layer.experts[e];  // biases stay f32 where they are
      for (TensorView* view : {&copy.gate, &copy.up, &copy.down}) {
        const int64_t cols = view->cols(), rows = view->rows();
        const int64_t row_bytes = dtype_bytes(type, cols);
        HostBuffer& bytes = copies->storage_.emplace_back(rows * row_bytes);
        row.resize(static_cast<size_t>(cols));
        for (int64_t r = 0; r < rows; ++r) {
          quant::dequantize_row(view->dtype, view->row(r), row.data(), cols);
          quant::quantize_row(type, row.data(), bytes.data() + r * row_bytes, cols);
        }
        view->dtype = type;
        view->data = bytes.data();
        copies->bytes_ += rows * row_bytes;
      }
      copies->weights_[static_cast<size_t>(l * c.n_experts) + e] = copy;
    }
  }
  return copies;
}

}  // namespace moenav
