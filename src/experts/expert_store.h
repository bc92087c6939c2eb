// Where each routed expert's weights live and what using one costs. The MoE layer asks the store
// for the experts a step needs; the store decides whether they are resident, fetched from a slower
// tier into a cache slot, or (by the miss policy) computed elsewhere. Router and Combine never see
// any of this, and no placement may change the numbers (shared/DESIGN.md §2).
#pragma once

#include <cstdint>
#include <span>

#include "model/model_weights.h"

namespace moenav {

class ExpertStore {
 public:
  virtual ~ExpertStore() = default;
  // The experts layer `layer` will use this step, in first-use order (hints for prefetch/cache).
  virtual void begin_layer(int64_t /*layer*/, std::span<const int32_t> /*experts*/) {}
  // Weights to compute with; valid until end_layer(layer).
  virtual FfnWeights acquire(int64_t layer, int64_t expert) = 0;
  virtual void end_layer(int64_t /*layer*/) {}
};

// Every expert resident where the model file is mapped: the baseline placement.
class ResidentExpertStore final : public ExpertStore {
 public:
  explicit ResidentExpertStore(const ModelWeights& weights) : weights_(weights) {}
  FfnWeights acquire(int64_t layer, int64_t expert) override {
    return weights_.layers[static_cast<size_t>(layer)].experts[static_cast<size_t>(expert)];
  }

 private:
  const ModelWeights& weights_;
};

}  // namespace moenav
