// The SwiGLU product on every instruction set against a double-precision reference, element by
// element: the vectorized exp must keep each result within a few float roundings, over the
// range where silu bends, where it is linear and where it vanishes, and for any length (tails).
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/activation.h"

namespace moenav::cpu {
namespace {

double silu_mul_reference(double gate, double up) { return gate / (1.0 + std::exp(-gate)) * up; }

TEST(Activation, SiluMulEveryIsaMatchesReference) {
  std::mt19937 random(11);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  std::vector<float> gate, up;
  for (float extreme : {-200.0f, -88.5f, -87.0f, -20.0f, -1e-6f, 0.0f, 1e-6f, 20.0f, 87.0f, 200.0f}) {
    gate.push_back(extreme);
    up.push_back(1.5f);
  }
  for (int i = 0; i < 1000; ++i) {
    gate.push_back(normal(random));
    up.push_back(normal(random));
  }
  for (int i = 0; i < static_cast<int>(Isa::Count); ++i) {
    const Isa isa = static_cast<Isa>(i);
    if (!isa_supported(isa)) continue;
    for (size_t n : {gate.size(), size_t{13}, size_t{3}}) {  // tails shorter than a vector
      std::vector<float> got(gate.begin(), gate.begin() + static_cast<std::ptrdiff_t>(n));
      silu_mul(got.data(), up.data(), static_cast<int64_t>(n), isa);
      for (size_t j = 0; j < n; ++j) {
        const double want = silu_mul_reference(gate[j], up[j]);
        // Four float roundings relative; absolutely below 1e-35 (gate < -80, where exp is clamped).
        EXPECT_NEAR(got[j], want, 4 * 6e-8 * std::fabs(want) + 1e-35)
            << isa_name(isa) << " gate " << gate[j] << " up " << up[j];
      }
    }
  }
}

}  // namespace
}  // namespace moenav::cpu
