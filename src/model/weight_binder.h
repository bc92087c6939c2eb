// Binds canonical tensors to the roles of ModelWeights, checking dtype and shape of each.
#pragma once

#include "model/model.h"

namespace moenav {

Status bind_weights(Model& model);

}  // namespace moenav
