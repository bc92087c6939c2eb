#include "text_stream.h"

#include <algorithm>

namespace moenav::server {

TextStream::TextStream(std::vector<std::string> stops) {
  for (std::string& stop : stops) {
    if (!stop.empty()) stops_.push_back(std::move(stop));
  }
}

std::string TextStream::push(const std::string& token_bytes) {
  if (stopped_) return {};
  held_ += utf8_.push(token_bytes);
  // The earliest stop string wins: text after it was generated but is never shown.
  size_t cut = std::string::npos;
  for (const std::string& stop : stops_) cut = std::min(cut, held_.find(stop));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string shown = held_.substr(0, cut);
    held_.clear();
    return shown;
  }
  const size_t keep = partial_stop_length();
  std::string shown = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return shown;
}

std::string TextStream::flush() {
  if (stopped_) return {};
  std::string rest = held_ + utf8_.flush();
  held_.clear();
  return rest;
}

size_t TextStream::partial_stop_length() const {
  size_t longest = 0;
  for (const std::string& stop : stops_) {
    const size_t limit = std::min(stop.size() - 1, held_.size());
    for (size_t length = limit; length > longest; --length) {
      if (held_.compare(held_.size() - length, length, stop, 0, length) == 0) {
        longest = length;
        break;
      }
    }
  }
  return longest;
}

}  // namespace moenav::server
