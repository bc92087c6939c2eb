#include "tune/goal.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include <fmt/format.h>

#include "core/byte_size.h"
#include "moenav/engine_config.h"

namespace moenav::tune {
namespace {

std::string lower_trim(std::string_view text) {
  size_t begin = 0, end = text.size();
  while (begin < end && std::isspace(static_cast<unsigned char>(text[begin]))) ++begin;
  while (end > begin && std::isspace(static_cast<unsigned char>(text[end - 1]))) --end;
  std::string out(text.substr(begin, end - begin));
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string without_spaces(std::string_view text) {
  std::string out;
  for (char c : text) if (!std::isspace(static_cast<unsigned char>(c))) out += c;
  return out;
}

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// A leading number and the unit text after it ("2.5ms" -> 2.5, "ms").
struct Quantity {
  double number = 0.0;
  std::string unit;
};
std::optional<Quantity> split_quantity(std::string_view text) {
  const std::string compact = without_spaces(text);
  char* end = nullptr;
  const double number = std::strtod(compact.c_str(), &end);
  if (end == compact.c_str()) return std::nullopt;
  return Quantity{number, std::string(end)};
}

std::optional<double> seconds_scale(std::string_view unit) {
  struct Scale { std::string_view unit; double seconds; };
  static constexpr Scale kScales[] = {{"", 1.0},    {"s", 1.0},    {"sec", 1.0},  {"secs", 1.0},
                                      {"second", 1.0}, {"seconds", 1.0}, {"ms", 1e-3},
                                      {"us", 1e-6}, {"min", 60.0}, {"minutes", 60.0}};
  for (const Scale& scale : kScales) if (scale.unit == unit) return scale.seconds;
  return std::nullopt;
}

// "2s/token", "50 ms per token", "2 s/tok" -> the time unit with the per-token part removed.
bool strip_per_token(std::string& unit) {
  for (std::string_view suffix : {"/token", "/tok", "pertoken", "/t"}) {
    if (ends_with(unit, suffix)) {
      unit.resize(unit.size() - suffix.size());
      return true;
    }
  }
  return false;
}

bool strip_tokens_per_second(std::string& unit) {
  for (std::string_view suffix : {"tok/s", "tokens/s", "t/s", "tokenspersecond", "tps"}) {
    if (ends_with(unit, suffix)) {
      unit.resize(unit.size() - suffix.size());
      return true;
    }
  }
  return false;
}

// An absolute bound for `metric` from text such as "50ms", "16GiB", "20 tok/s", "7.5".
Expected<double> parse_bound(Metric metric, const std::string& text, const std::string& context) {
  auto quantity = split_quantity(text);
  if (!quantity) return Status::errorf("{}: '{}' is not a number with a unit", context, text);
  switch (metric_info(metric).unit) {
    case Unit::Seconds: {
      std::string unit = quantity->unit;
      strip_per_token(unit);
      if (auto scale = seconds_scale(unit)) return quantity->number * *scale;
      return Status::errorf("{}: unknown time unit '{}' (use s, ms or us)", context, quantity->unit);
    }
    case Unit::Bytes: {
      if (quantity->unit.empty()) {
        return Status::errorf("{}: give memory with a unit (16GiB, 512MB), found '{}'", context, text);
      }
      std::string unit = quantity->unit;
      for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      // parse_byte_size wants "KiB/MiB/GiB" with a lower-case i.
      for (size_t i = 1; i + 1 < unit.size(); ++i) if (unit[i] == 'I' && unit[i + 1] == 'B') unit[i] = 'i';
      auto bytes = parse_byte_size(without_spaces(text).substr(0, without_spaces(text).size() -
                                                               quantity->unit.size()) + unit);
      if (!bytes.ok()) return bytes.status().with_context(context);
      return static_cast<double>(*bytes);
    }
    case Unit::TokensPerSecond: {
      std::string unit = quantity->unit;
      strip_tokens_per_second(unit);
      if (!unit.empty()) return Status::errorf("{}: unknown throughput unit '{}' (use tok/s)", context, quantity->unit);
      return quantity->number;
    }
    case Unit::None:
      if (!quantity->unit.empty()) return Status::errorf("{}: '{}' takes a plain number", context, metric_info(metric).name);
      return quantity->number;
  }
  return Status::errorf("{}: cannot parse '{}'", context, text);
}

std::string_view comparison_text(Comparison comparison) {
  switch (comparison) {
    case Comparison::LessEqual: return "<=";
    case Comparison::Less: return "<";
    case Comparison::GreaterEqual: return ">=";
    case Comparison::Greater: return ">";
  }
  return "?";
}

std::string canonical_text(const Constraint& constraint) {
  const std::string bound = constraint.relative_to_base
                                ? fmt::format("{:g}*base", constraint.value)
                                : format_value(constraint.metric, constraint.value);
  return fmt::format("{} {} {}", metric_info(constraint.metric).name,
                     comparison_text(constraint.comparison), bound);
}

// A clause of an objective sentence after "under"/"within": a bare quantity whose unit says the
// metric ("16GB" -> gpu_mem, "2s/token" -> tpot, "20 tok/s" -> throughput, "30s" -> latency),
// "ppl 7", or a full constraint expression.
Expected<Constraint> parse_clause(const std::string& clause) {
  if (clause.find_first_of("<>") != std::string::npos) return parse_constraint(clause);
  for (std::string_view word : {"perplexity", "ppl"}) {
    if (clause.rfind(word, 0) == 0) return parse_constraint("ppl <= " + clause.substr(word.size()));
  }
  auto quantity = split_quantity(clause);
  if (!quantity) {
    return Status::errorf("'{}': expected a limit such as 16GB, 2s/token, 20 tok/s or 'tpot <= 50ms'", clause);
  }
  std::string unit = quantity->unit;
  if (strip_per_token(unit)) return parse_constraint("tpot <= " + clause);
  if (strip_tokens_per_second(unit)) return parse_constraint("throughput >= " + clause);
  if (seconds_scale(unit) && !unit.empty()) return parse_constraint("latency <= " + clause);
  return parse_constraint("gpu_mem <= " + clause);
}

}  // namespace

double Constraint::bound(double base_value) const {
  return relative_to_base ? value * base_value : value;
}

bool Constraint::satisfied(double measured, double base_value) const {
  const double limit = bound(base_value);
  if (std::isnan(measured) || std::isnan(limit)) return false;
  switch (comparison) {
    case Comparison::LessEqual: return measured <= limit;
    case Comparison::Less: return measured < limit;
    case Comparison::GreaterEqual: return measured >= limit;
    case Comparison::Greater: return measured > limit;
  }
  return false;
}

double Constraint::violation(double measured, double base_value) const {
  const double limit = bound(base_value);
  if (std::isnan(measured) || std::isnan(limit) || limit == 0.0) return NAN;
  return upper_bound() ? measured / limit - 1.0 : 1.0 - measured / limit;
}

std::string Goal::describe() const {
  std::string text = objective.text;
  for (size_t i = 0; i < constraints.size(); ++i) {
    text += (i == 0 ? " subject to " : ", ") + constraints[i].text;
  }
  return text;
}

bool Goal::speaks_of_gpu() const {
  if (objective.metric == Metric::GpuMemory) return true;
  return std::any_of(constraints.begin(), constraints.end(),
                     [](const Constraint& c) { return c.metric == Metric::GpuMemory; });
}

std::vector<std::string> fit_base_to_goal(EngineConfig& base, const Goal& goal, bool backend_given,
                                          bool gpu_available) {
  std::vector<std::string> notes;
  if (!goal.speaks_of_gpu()) return notes;
  if (!backend_given && base.device.backend != "cuda" && gpu_available) {
    base.device.backend = "cuda";
    notes.push_back("the goal is about GPU memory and a CUDA device is here: every point runs on it "
                    "(--backend cpu keeps the CPU)");
  }
  if (base.device.backend != "cuda" || !base.device.gpu_memory.empty()) return notes;
  double bound = -1.0;
  for (const Constraint& c : goal.constraints) {
    if (c.metric != Metric::GpuMemory || !c.upper_bound() || c.relative_to_base) continue;
    bound = bound < 0.0 ? c.value : std::min(bound, c.value);
  }
  if (bound <= 0.0) return notes;
  const auto bytes = static_cast<int64_t>(bound);
  base.device.gpu_memory = std::to_string(bytes);
  std::string placement;
  if (base.placement.expert_cache.size == "all") {
    base.placement.expert_cache.size = "auto";
    placement = "; experts that do not fit stay in host memory behind a device cache";
  }
  notes.push_back(fmt::format("the GPU budget is the gpu_mem bound, {}{} (--gpu-memory sets another)",
                              format_bytes(bytes), placement));
  return notes;
}

bool Goal::needs_quality() const {
  if (objective.metric == Metric::Perplexity) return true;
  return std::any_of(constraints.begin(), constraints.end(),
                     [](const Constraint& c) { return c.metric == Metric::Perplexity; });
}

Expected<Objective> parse_objective(const std::string& text) {
  const std::string lowered = lower_trim(text);
  const size_t space = lowered.find(' ');
  if (space == std::string::npos) {
    return Status::errorf("objective '{}': write a direction and a metric, e.g. 'min latency', "
                          "'max throughput', 'minimize latency under 16GB'", text);
  }
  const std::string verb = lowered.substr(0, space);
  std::string noun = lower_trim(lowered.substr(space + 1));
  std::replace(noun.begin(), noun.end(), ' ', '_');
  static const std::vector<std::string> kMinimize = {"min", "minimize", "minimise", "minimum", "lowest", "reduce"};
  static const std::vector<std::string> kMaximize = {"max", "maximize", "maximise", "maximum", "highest", "best"};
  const bool minimize_word = std::find(kMinimize.begin(), kMinimize.end(), verb) != kMinimize.end();
  const bool maximize_word = std::find(kMaximize.begin(), kMaximize.end(), verb) != kMaximize.end();
  if (!minimize_word && !maximize_word) {
    return Status::errorf("objective '{}': start with min/minimize or max/maximize", text);
  }
  auto metric = metric_from_name(noun);
  if (!metric) {
    return Status::errorf("objective '{}': unknown metric '{}' (latency, tpot, ttft, throughput, "
                          "gpu_mem, host_mem, ppl, quality)", text, noun);
  }
  Objective objective;
  objective.metric = *metric;
  bool better_lower = metric_info(*metric).lower_is_better;
  const bool quality = noun == "quality";
  if (quality) better_lower = false;  // quality is maximized by minimizing perplexity
  if (minimize_word == !better_lower) {
    return Status::errorf("objective '{}': {} is better {}; did you mean '{} {}'?", text, noun,
                          better_lower ? "lower" : "higher", better_lower ? "min" : "max", noun);
  }
  objective.minimize = metric_info(*metric).lower_is_better;
  objective.text = fmt::format("{} {}", objective.minimize ? "min" : "max", metric_info(*metric).name);
  return objective;
}

Expected<Constraint> parse_constraint(const std::string& text) {
  const std::string lowered = lower_trim(text);
  struct Operator { std::string_view text; Comparison comparison; };
  static constexpr Operator kOperators[] = {{"<=", Comparison::LessEqual}, {">=", Comparison::GreaterEqual},
                                            {"<", Comparison::Less},       {">", Comparison::Greater}};
  for (const Operator& op : kOperators) {
    const size_t at = lowered.find(op.text);
    if (at == std::string::npos) continue;
    std::string name = lower_trim(lowered.substr(0, at));
    std::replace(name.begin(), name.end(), ' ', '_');
    const std::string rhs = without_spaces(lowered.substr(at + op.text.size()));
    auto metric = metric_from_name(name);
    if (!metric || name == "quality") {
      return Status::errorf("constraint '{}': unknown metric '{}' (gpu_mem, host_mem, tpot, ttft, "
                            "latency, ppl, throughput)", text, name);
    }
    Constraint constraint;
    constraint.metric = *metric;
    constraint.comparison = op.comparison;
    if (const size_t base_at = rhs.find("base"); base_at != std::string::npos) {
      std::string factor = rhs.substr(0, base_at) + rhs.substr(base_at + 4);
      factor.erase(std::remove_if(factor.begin(), factor.end(), [](char c) { return c == '*' || c == 'x'; }),
                   factor.end());
      char* end = nullptr;
      constraint.value = factor.empty() ? 1.0 : std::strtod(factor.c_str(), &end);
      if (!factor.empty() && end != factor.c_str() + factor.size()) {
        return Status::errorf("constraint '{}': write a relative bound as F*base, e.g. 1.05*base", text);
      }
      constraint.relative_to_base = true;
    } else {
      MOENAV_ASSIGN_OR_RETURN(constraint.value, parse_bound(*metric, rhs, fmt::format("constraint '{}'", text)));
    }
    if (!(constraint.value > 0.0)) {
      return Status::errorf("constraint '{}': the bound must be positive", text);
    }
    constraint.text = canonical_text(constraint);
    return constraint;
  }
  return Status::errorf("constraint '{}': expected METRIC OP VALUE, e.g. 'tpot <= 50ms', "
                        "'gpu_mem <= 16GiB', 'ppl <= 1.05*base'", text);
}

Expected<Goal> parse_goal(const std::string& objective, const std::vector<std::string>& constraints) {
  std::string sentence = lower_trim(objective);
  std::string tail;
  for (std::string_view keyword : {" under ", " within ", " below ", " subject to ", " with ",
                                   " s.t. ", " at most ", " given "}) {
    const size_t at = sentence.find(keyword);
    if (at != std::string::npos) {
      tail = sentence.substr(at + keyword.size());
      sentence.resize(at);
      break;
    }
  }
  Goal goal;
  MOENAV_ASSIGN_OR_RETURN(goal.objective, parse_objective(sentence));
  // Clauses of the tail: "16gb and ppl <= 1.05*base", "2s/token, 8GB".
  std::vector<std::string> clauses;
  for (size_t begin = 0; begin < tail.size();) {
    size_t end = tail.size(), skip = 0;
    for (std::string_view separator : {std::string_view(" and "), std::string_view(",")}) {
      const size_t at = tail.find(separator, begin);
      if (at != std::string::npos && at < end) {
        end = at;
        skip = separator.size();
      }
    }
    clauses.push_back(lower_trim(tail.substr(begin, end - begin)));
    begin = end + skip;
    if (skip == 0) break;
  }
  for (const std::string& clause : clauses) {
    if (clause.empty()) continue;
    auto constraint = parse_clause(clause);
    if (!constraint.ok()) return constraint.status().with_context(fmt::format("objective '{}'", objective));
    goal.constraints.push_back(*constraint);
  }
  for (const std::string& text : constraints) {
    MOENAV_ASSIGN_OR_RETURN(Constraint constraint, parse_constraint(text));
    goal.constraints.push_back(constraint);
  }
  return goal;
}

}  // namespace moenav::tune
