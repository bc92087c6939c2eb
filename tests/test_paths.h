// Where tests find their data. The embedded model is in the repo; everything else is in
// ../shared, which CI has and a bare clone may not: tests that need it skip with a message.
#pragma once

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

namespace moenav::testing {

inline std::string source_path(const std::string& relative) {
  return std::string(MOENAV_SOURCE_DIR) + "/" + relative;
}

inline std::string shared_path(const std::string& relative) {
  return std::string(MOENAV_SHARED_DIR) + "/" + relative;
}

inline std::string moenav_binary() { return MOENAV_BINARY; }

}  // namespace moenav::testing

// Skips the current test when a file from ../shared is missing.
#define MOENAV_REQUIRE_SHARED(relative)                                                    \
  do {                                                                                     \
    if (!std::filesystem::exists(::moenav::testing::shared_path(relative)))                \
      GTEST_SKIP() << "needs ../shared/" << (relative) << " (not present in this checkout)"; \
  } while (0)
