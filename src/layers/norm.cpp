#include "layers/norm.h"

#include <cmath>

namespace moenav {

void rms_norm(const float* input, const float* weight, float* output, int64_t n_rows, int64_t dim,
              float eps) {
  for (int64_t row = 0; row < n_rows; ++row) {
    const float* x = input + row * dim;
    float* y = output + row * dim;
    float sum_squares = 0.0f;
#pragma omp simd reduction(+ : sum_squares)
    for (int64_t i = 0; i < dim; ++i) sum_squares += x[i] * x[i];
    const float scale = 1.0f / std::sqrt(sum_squares / static_cast<float>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) y[i] = x[i] * scale * weight[i];
  }
}

}  // namespace moenav
