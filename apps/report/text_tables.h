// Terminal tables from a tune run's summary JSON: the Pareto front (with the recommendation
// starred and the baseline for reference) and the paper's Table 2 remade for the model at hand.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tune/paper_table.h"

namespace moenav::report {

std::string pareto_table(const nlohmann::json& summary);
// Markdown-style, shaped like shared/seeds/000 Table 2.
std::string paper_table(const std::vector<tune::PaperRow>& rows, bool has_gpu, const std::string& caption);

}  // namespace moenav::report
