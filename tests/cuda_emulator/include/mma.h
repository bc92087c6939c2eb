// The CUDA emulator's warp matrix functions (nvcuda::wmma): the 16x16x16 bf16 shapes with f32
// accumulation that the grouped expert kernels use. A warp's fragment is spread over its lanes
// as on the GPU only where that is observable: each lane holds its own share of an accumulator
// (elements lane, lane + 32, ...), so elementwise work on x[i] and stores behave as they do
// there; the A and B operands are held whole by every lane (they are only loaded and
// multiplied). The functions need no rendezvous: shared memory is written before the barrier
// that precedes the loads, as on the GPU.
#pragma once

#include "cuda_bf16.h"
#include "cuda_runtime.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment;

// The operands of an M x K by K x N product, as floats: a(i, k) at x[i * K + k], b(k, j) at x[k * N + j].
template <typename T, typename Layout>
struct fragment<matrix_a, 16, 16, 16, T, Layout> {
  static_assert(std::is_same_v<T, __nv_bfloat16>, "the emulator has bf16 operands only");
  static constexpr int num_elements = 256;
  float x[256];
};
template <typename T, typename Layout>
struct fragment<matrix_b, 16, 16, 16, T, Layout> {
  static_assert(std::is_same_v<T, __nv_bfloat16>, "the emulator has bf16 operands only");
  static constexpr int num_elements = 256;
  float x[256];
};
// This lane's 8 elements of the 16 x 16 accumulator: x[r] is element lane + 32 r, row-major.
template <>
struct fragment<accumulator, 16, 16, 16, float, void> {
  static constexpr int num_elements = 8;
  float x[8];
};

namespace detail {
inline int lane() { return static_cast<int>(threadIdx.x % 32); }
inline int row_of(int r) { return (lane() + 32 * r) / 16; }
inline int column_of(int r) { return (lane() + 32 * r) % 16; }
}  // namespace detail

inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float value) {
  for (float& v : f.x) v = value;
}

template <typename Layout>
void load_matrix_sync(fragment<matrix_a, 16, 16, 16, __nv_bfloat16, Layout>& f, const __nv_bfloat16* p,
                      unsigned ldm) {
  constexpr bool row = std::is_same_v<Layout, row_major>;
  for (int i = 0; i < 16; ++i)
    for (int k = 0; k < 16; ++k) f.x[i * 16 + k] = __bfloat162float(row ? p[i * ldm + k] : p[k * ldm + i]);
}

template <typename Layout>
void load_matrix_sync(fragment<matrix_b, 16, 16, 16, __nv_bfloat16, Layout>& f, const __nv_bfloat16* p,
                      unsigned ldm) {
  constexpr bool row = std::is_same_v<Layout, row_major>;
  for (int k = 0; k < 16; ++k)
    for (int j = 0; j < 16; ++j) f.x[k * 16 + j] = __bfloat162float(row ? p[k * ldm + j] : p[j * ldm + k]);
}

template <typename LayoutA, typename LayoutB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
              const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LayoutA>& a,
              const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LayoutB>& b,
              const fragment<accumulator, 16, 16, 16, float>& c) {
  for (int r = 0; r < 8; ++r) {
    const int i = detail::row_of(r), j = detail::column_of(r);
    float sum = c.x[r];
    for (int k = 0; k < 16; ++k) sum += a.x[i * 16 + k] * b.x[k * 16 + j];
    d.x[r] = sum;
  }
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t layout) {
  for (int r = 0; r < 8; ++r) {
    const int i = detail::row_of(r), j = detail::column_of(r);
    p[layout == mem_row_major ? i * ldm + j : j * ldm + i] = f.x[r];
  }
}

}  // namespace nvcuda::wmma
