// "16GiB", "512MB", "1e9" -> bytes (decimal and binary units), and bytes -> "1.50 GiB".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "moenav/status.h"

namespace moenav {

Expected<int64_t> parse_byte_size(std::string_view text);

// "1.50 GiB", "288.0 KiB", "12 B".
std::string format_bytes(int64_t bytes);

}  // namespace moenav
