// The default design space for a model: a table of dimensions written in option-table paths
// (weights type, experts per token, skipping, expert cache size and policy, prefetch, miss
// policy, threads, ubatch), sized to the model (its k and expert count) and the machine (cores).
// A dimension the build cannot run is left out with a note: each weight type is loaded once and
// checked (Profiler::check_effective), and expert caching is probed with a budget no engine that
// implements it can accept.
#pragma once

#include <string>
#include <vector>

#include "moenav/engine.h"
#include "tune/config_space.h"

namespace moenav::tune {

enum class SpacePreset {
  Small,    // a handful of points (tests)
  Default,  // what `tune` searches
  Wide,     // >= 100 points on the embedded model (the --exhaustive validation)
};

Expected<SpacePreset> space_preset_from_name(const std::string& name);

// `base_engine` is the model loaded with `base`. `dimensions` ("PATH=V1,V2", ConfigSpace::
// add_dimension_text) are added to or replace the preset's before the wide preset grows to 100.
Expected<ConfigSpace> default_space(const std::string& model_path, const Engine& base_engine, const EngineConfig& base,
                                    SpacePreset preset, const std::vector<std::string>& dimensions = {});

// Whether this build keeps an expert cache under a host/GPU memory budget (see above); the
// message says why not.
Status probe_expert_cache(const std::string& model_path, const EngineConfig& base);

}  // namespace moenav::tune
