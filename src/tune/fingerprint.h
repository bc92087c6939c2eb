// Identities for the results store: a model hash (cheap: the model's hyper-parameters and tensor
// index — names, dtypes, shapes, offsets — never the gigabytes of weights) and a hardware
// fingerprint (CPU model, cores, memory, GPU if any). Two runs share measurements only when both
// match.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "moenav/engine.h"

namespace moenav::tune {

struct Fingerprint {
  std::string key;              // 16 hex digits
  nlohmann::json description;   // what went into it, for the report
};

Fingerprint model_fingerprint(const Engine& engine);
Fingerprint hardware_fingerprint();

// 64-bit FNV-1a, as 16 hex digits.
std::string hash_text(std::string_view text);

}  // namespace moenav::tune
