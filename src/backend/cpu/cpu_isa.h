// Which SIMD instruction set the CPU kernels use. The project may be built for baseline x86-64
// (MOENAV_NATIVE=OFF), so every kernel family compiles an AVX-512, an AVX2 and a scalar variant
// (GCC target pragmas) and the best one the CPU supports is chosen once, at first use. Tests force
// each available variant and compare it with the scalar reference.
#pragma once

#include <cstdint>
#include <string_view>

namespace moenav::cpu {

enum class Isa : uint8_t {
  Scalar,  // portable C++, the reference
  Avx2,    // AVX2 + FMA + F16C
  Avx512,  // AVX-512 F/BW/VL + VNNI (Zen4, Ice Lake and later)
  Count
};

std::string_view isa_name(Isa isa);
bool isa_supported(Isa isa);  // by this CPU (and compiled into this binary)
Isa best_isa();               // the best supported one, detected once

}  // namespace moenav::cpu
