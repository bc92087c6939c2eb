// The CUDA emulator's half type, converted by the compiler's _Float16.
#pragma once

#include <cstdint>
#include <cstring>

#include "cuda_runtime.h"

struct __half {
  uint16_t bits;
};

inline __half __ushort_as_half(unsigned short bits) { return __half{bits}; }

// The compiler's IEEE binary16 (_Float16): conversions round to nearest even.
inline __half __float2half_rn(float value) {
  const _Float16 half = static_cast<_Float16>(value);
  uint16_t bits;
  std::memcpy(&bits, &half, sizeof(bits));
  return __half{bits};
}

inline float __half2float(__half h) {
  _Float16 half;
  std::memcpy(&half, &h.bits, sizeof(half));
  return static_cast<float>(half);
}
