// Where a forward pass spends its time, by named stage. The engine adds each stage's wall time
// as it runs (two clock reads per stage and layer: negligible next to the work), `bench` prints
// the split, and the navigator's report plots it.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string_view>

namespace moenav {

enum class Stage : uint8_t {
  Embedding,
  Norm,
  Attention,  // projections, rope, cache append, softmax(qk)v, output projection
  Moe,        // router, routing policy, experts (incl. the expert store's misses), combine
  DenseFfn,
  Residual,
  LmHead,
  Count
};

constexpr std::array<std::string_view, static_cast<size_t>(Stage::Count)> kStageNames = {
    "embedding", "norm", "attention", "moe", "dense_ffn", "residual", "lm_head"};

struct StageTimes {
  std::array<double, static_cast<size_t>(Stage::Count)> seconds{};
  void add(Stage stage, double value) { seconds[static_cast<size_t>(stage)] += value; }
  double operator[](Stage stage) const { return seconds[static_cast<size_t>(stage)]; }
  void reset() { seconds.fill(0.0); }
};

// Adds the time from construction (or the last lap) to a stage.
class StageClock {
 public:
  explicit StageClock(StageTimes* times) : times_(times), last_(std::chrono::steady_clock::now()) {}
  void lap(Stage stage) {
    if (times_ == nullptr) return;
    const auto now = std::chrono::steady_clock::now();
    times_->add(stage, std::chrono::duration<double>(now - last_).count());
    last_ = now;
  }

 private:
  StageTimes* times_;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace moenav
