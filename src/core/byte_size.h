// "16GiB", "512MB", "1e9" -> bytes (decimal and binary units).
#pragma once

#include <cstdint>
#include <string_view>

#include "moenav/status.h"

namespace moenav {

Expected<int64_t> parse_byte_size(std::string_view text);

}  // namespace moenav
