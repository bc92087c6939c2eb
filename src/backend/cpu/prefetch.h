// Software prefetch for the one-token (matvec) kernels reading weights that stream from memory
// (WeightRead::Streamed, matmul_kernels.h).
//
// Measured on a 2-core Intel Xeon (KVM, AVX-512, 16 GB/s read per core), bench_matmul's matvec
// over 100 MB: with the hardware prefetchers alone the integer kernels reach 0.6-0.75 of the
// read bandwidth although they compute 1.4-1.9x faster than memory delivers: too few lines are
// in flight. Prefetching into L2 8 KiB ahead, in-process A/B: Q8_0 +23-36%, Q4_0 +32-36%, Q4_K
// +25-34%, Q5_K +24-33%, Q6_K +27-39%, Q3_K +55%, Q2_K +120-140% (Q8_0 and Q4_0 to 0.93 of the
// bandwidth). 2 KiB ahead gave 0.76-0.78, 32 KiB no more than 8 KiB, into L1 (T0) less, and a
// burst of prefetches for the whole next row nothing. For Q8_0/Q4_0, 4 KiB, 12 KiB or one more
// line per step are within 2 % of this (A/B of function-pointer selected variants); the AVX-512
// k-quant kernels do better with their own (prefetch_k_quant). On the Zen 4 machine of earlier
// sessions 256-2048 bytes ahead gained nothing; 8 KiB was not measured there.
#pragma once

#include <cstdint>

namespace moenav::cpu::detail {

constexpr int64_t kPrefetchDistance = 8 * 1024;

// Prefetches (into L2) kLines lines from step + kDistance for a kernel whose loop reads
// kStepBytes of one weight row per step. With kLines >= kStepBytes / 64 (rounded up),
// consecutive steps' addresses are at most 64 bytes apart, so no line of the stream is skipped;
// past the end of the weights a prefetch is harmless (it never faults).
template <int kStepBytes, int64_t kDistance = kPrefetchDistance,
          int kLines = (kStepBytes + 63) / 64>
inline void prefetch_weights_ahead(const void* step) {
  static_assert(kLines * 64 >= kStepBytes, "prefetches must cover every line of the stream");
  const auto* ahead = static_cast<const char*>(step) + kDistance;
  for (int line = 0; line < kLines; ++line) {
    __builtin_prefetch(ahead + 64 * line, 0, 2);  // read, locality 2: prefetcht1 on x86
  }
}

}  // namespace moenav::cpu::detail
