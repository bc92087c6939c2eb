#include "backend/cpu/cpu_isa.h"

#include <array>

namespace moenav::cpu {
namespace {

constexpr std::array<std::string_view, static_cast<size_t>(Isa::Count)> kIsaNames = {
    "scalar", "avx2", "avx512"};

bool detect(Isa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  switch (isa) {
    case Isa::Scalar:
      return true;
    case Isa::Avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    case Isa::Avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    case Isa::Count:
      return false;
  }
  return false;
#else
  return isa == Isa::Scalar;
#endif
}

}  // namespace

std::string_view isa_name(Isa isa) {
  return isa < Isa::Count ? kIsaNames[static_cast<size_t>(isa)] : "unknown";
}

bool isa_supported(Isa isa) {
  static const std::array<bool, static_cast<size_t>(Isa::Count)> supported = {
      detect(Isa::Scalar), detect(Isa::Avx2), detect(Isa::Avx512)};
  return isa < Isa::Count && supported[static_cast<size_t>(isa)];
}

Isa best_isa() {
  static const Isa best = isa_supported(Isa::Avx512) ? Isa::Avx512
                          : isa_supported(Isa::Avx2) ? Isa::Avx2
                                                     : Isa::Scalar;
  return best;
}

}  // namespace moenav::cpu
