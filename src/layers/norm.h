// RMSNorm, the only normalization the supported architectures use.
#pragma once

#include <cstdint>

namespace moenav {

// output[r, :] = input[r, :] / sqrt(mean(input[r, :]^2) + eps) * weight   (rows of width dim)
// output may alias input.
void rms_norm(const float* input, const float* weight, float* output, int64_t n_rows, int64_t dim,
              float eps);

}  // namespace moenav
