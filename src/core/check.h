// Internal invariant checks. Never for user input: that returns a Status (see status.h).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <source_location>

namespace moenav {

[[noreturn]] inline void check_failed(const char* condition,
                                      std::source_location where = std::source_location::current()) {
  std::fprintf(stderr, "moenav: internal error: %s failed at %s:%u (%s)\n", condition,
               where.file_name(), where.line(), where.function_name());
  std::abort();
}

}  // namespace moenav

#define MOENAV_CHECK(condition) \
  ((condition) ? (void)0 : ::moenav::check_failed(#condition))
