// The scale searches behind ggml's k-quant reference quantizers (make_qkx2_quants,
// make_qx_quants, make_q3_quants in ggml-quants.c), re-derived with the same arithmetic in the
// same order: bit-compatibility with llama.cpp's files depends on every rounding matching.
#include <cmath>
#include <cstdint>

#include "quant/quant_impl.h"

// ggml's reference code is C compiled without FMA contraction; GCC contracts a * b + c in C++
// under -march=native, which changes roundings. Keep every product and sum separately rounded.
#pragma GCC optimize("fp-contract=off")

namespace moenav::quant {

float search_scale_min(int n, int max_level, const float* x, const float* weights, uint8_t* levels,
                       float* negated_min, float rmin, float rdelta, int nstep,
                       bool use_abs_error) {
  // Affine fit x ~ scale * l + min (min <= 0), l in [0, max_level], minimizing the weighted
  // squared (or absolute) error over a sweep of candidate scales.
  float min = x[0];
  float max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) levels[i] = 0;
    *negated_min = -min;
    return 0.0f;
  }
  auto error_of = [&](float scale, float offset, const uint8_t* candidate) {
    float error = 0;
    for (int i = 0; i < n; ++i) {
      float diff = scale * candidate[i] + offset - x[i];
      diff = use_abs_error ? std::fabs(diff) : diff * diff;
      error += weights[i] * diff;
    }
    return error;
  };
  float inverse_scale = max_level / (max - min);
  float scale = 1 / inverse_scale;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(inverse_scale * (x[i] - min));
    levels[i] = static_cast<uint8_t>(l < 0 ? 0 : l > max_level ? max_level : l);
  }
  float best_error = error_of(scale, min, levels);
  if (nstep < 1) {
    *negated_min = -min;
    return scale;
  }
  uint8_t candidate[kMaxSearchLength];
  for (int step = 0; step <= nstep; ++step) {
    inverse_scale = (rmin + rdelta * step + max_level) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(inverse_scale * (x[i] - min));
      l = l < 0 ? 0 : l > max_level ? max_level : l;
      candidate[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float determinant = sum_w * sum_l2 - sum_l * sum_l;
    if (determinant > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / determinant;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / determinant;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      const float error = error_of(this_scale, this_min, candidate);
      if (error < best_error) {
        for (int i = 0; i < n; ++i) levels[i] = candidate[i];
        best_error = error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *negated_min = -min;
  return scale;
}

namespace {

// x * x weighting (ggml's rmse_type 1).
float symmetric_fit(int n, int max_level, const float* x, float inverse_scale, float* sum_lx,
                    float* sum_l2) {
  *sum_lx = 0;
  *sum_l2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(inverse_scale * x[i]);
    l = l < -max_level ? -max_level : l > max_level - 1 ? max_level - 1 : l;
    const float w = x[i] * x[i];
    *sum_lx += w * x[i] * l;
    *sum_l2 += w * l * l;
  }
  return *sum_l2 != 0 ? *sum_lx / *sum_l2 : 0.0f;
}

void symmetric_levels(int n, int max_level, const float* x, float inverse_scale, int8_t* levels) {
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(inverse_scale * x[i]);
    l = l < -max_level ? -max_level : l > max_level - 1 ? max_level - 1 : l;
    levels[i] = static_cast<int8_t>(l + max_level);
  }
}

}  // namespace

float search_scale_symmetric(int n, int max_level, const float* x, int8_t* levels) {
  // x ~ scale * (l - max_level), l in [0, 2 * max_level - 1]; the extreme value maps to
  // -max_level (the level without a positive twin), then 18 nearby scales are tried.
  float max = 0;
  float max_abs = 0;
  for (int i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (a > max_abs) {
      max_abs = a;
      max = x[i];
    }
  }
  if (max_abs < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) levels[i] = 0;
    return 0.0f;
  }
  float inverse_scale = -max_level / max;
  float sum_lx, sum_l2;
  float scale = symmetric_fit(n, max_level, x, inverse_scale, &sum_lx, &sum_l2);
  symmetric_levels(n, max_level, x, inverse_scale, levels);
  float best = scale * sum_lx;
  for (int step = -9; step <= 9; ++step) {
    if (step == 0) continue;
    inverse_scale = -(max_level + 0.1f * step) / max;
    symmetric_fit(n, max_level, x, inverse_scale, &sum_lx, &sum_l2);
    if (sum_l2 > 0 && sum_lx * sum_lx > best * sum_l2) {
      symmetric_levels(n, max_level, x, inverse_scale, levels);
      scale = sum_lx / sum_l2;
      best = scale * sum_lx;
    }
  }
  return scale;
}

float search_scale_q3(int n, int max_level, const float* x, int8_t* levels) {
  // Like search_scale_symmetric, but refined by moving single levels (ggml's make_q3_quants with
  // do_rmse): up to 5 passes, each accepting a change only when it raises sum_lx^2 / sum_l2.
  float max = 0;
  float max_abs = 0;
  for (int i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (a > max_abs) {
      max_abs = a;
      max = x[i];
    }
  }
  if (max_abs < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) levels[i] = 0;
    return 0.0f;
  }
  const float inverse_scale = -max_level / max;
  float sum_lx = 0;
  float sum_l2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(inverse_scale * x[i]);
    l = l < -max_level ? -max_level : l > max_level - 1 ? max_level - 1 : l;
    levels[i] = static_cast<int8_t>(l);
    const float w = x[i] * x[i];
    sum_lx += w * x[i] * l;
    sum_l2 += w * l * l;
  }
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sum_lx - w * x[i] * levels[i];
      if (slx > 0) {
        float sl2 = sum_l2 - w * levels[i] * levels[i];
        int l = nearest_int(x[i] * sl2 / slx);
        l = l < -max_level ? -max_level : l > max_level - 1 ? max_level - 1 : l;
        if (l != levels[i]) {
          slx += w * x[i] * l;
          sl2 += w * l * l;
          if (sl2 > 0 && slx * slx * sum_l2 > sum_lx * sum_lx * sl2) {
            levels[i] = static_cast<int8_t>(l);
            sum_lx = slx;
            sum_l2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (changed == 0) break;
  }
  for (int i = 0; i < n; ++i) levels[i] = static_cast<int8_t>(levels[i] + max_level);
  return sum_l2 > 0.0f ? sum_lx / sum_l2 : 0.0f;
}

}  // namespace moenav::quant
