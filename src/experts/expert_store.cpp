#include "experts/expert_store.h"

#include "experts/routing_trace.h"

namespace moenav {

void ExpertStore::record(const LayerPlan& plan) {
  if (trace_ != nullptr) trace_->record(plan);
}

}  // namespace moenav
