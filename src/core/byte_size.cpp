// Byte sizes as users write them ("16GiB", "512MB", "1e9"): memory budgets, cache sizes, I/O
// bounds. In core because the memory planner (experts) and the option table (runtime) both read
// them.
#include "core/byte_size.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <string>

namespace moenav {

Expected<int64_t> parse_byte_size(std::string_view text) {
  std::string number_part;
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.' ||
                             text[i] == 'e' || text[i] == 'E' || text[i] == '+')) {
    number_part += text[i++];
  }
  std::string unit(text.substr(i));
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  char* end = nullptr;
  const double number = std::strtod(number_part.c_str(), &end);
  if (number_part.empty() || end != number_part.c_str() + number_part.size() || number < 0) {
    return Status::errorf("'{}' is not a byte size (examples: 16GiB, 512MB, 1048576)", text);
  }
  struct Unit {
    std::string_view name;
    double scale;
  };
  static constexpr Unit kUnits[] = {{"", 1},
                                    {"B", 1},
                                    {"KB", 1e3},
                                    {"MB", 1e6},
                                    {"GB", 1e9},
                                    {"TB", 1e12},
                                    {"KiB", 1024.0},
                                    {"MiB", 1048576.0},
                                    {"GiB", 1073741824.0},
                                    {"TiB", 1099511627776.0}};
  for (const Unit& candidate : kUnits) {
    if (candidate.name == unit) return static_cast<int64_t>(std::llround(number * candidate.scale));
  }
  return Status::errorf("'{}': unknown unit '{}' (use B, KB, MB, GB, KiB, MiB, GiB)", text, unit);
}

std::string format_bytes(int64_t bytes) {
  const double value = static_cast<double>(bytes);
  if (bytes >= (int64_t{1} << 30)) return fmt::format("{:.2f} GiB", value / (1 << 30));
  if (bytes >= (int64_t{1} << 20)) return fmt::format("{:.2f} MiB", value / (1 << 20));
  if (bytes >= (int64_t{1} << 10)) return fmt::format("{:.1f} KiB", value / (1 << 10));
  return fmt::format("{} B", bytes);
}

}  // namespace moenav
