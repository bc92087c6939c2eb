// Turns a sequence's generated tokens into the text a client may see so far: whole UTF-8
// characters only, and never a piece of text that could still turn out to be the start of a stop
// string (OpenAI excludes the stop text from the output, so it must not be streamed first).
#pragma once

#include <string>
#include <vector>

#include "runtime/generate.h"

namespace moenav::server {

class TextStream {
 public:
  // Empty stop strings are ignored (they would match everywhere).
  explicit TextStream(std::vector<std::string> stops);

  // Adds one token's bytes; returns the text that is now safe to show.
  std::string push(const std::string& token_bytes);
  // True once a stop string was found; push() then returned the text before it.
  bool stopped() const { return stopped_; }
  // At the end of generation: the held-back text (no stop string can complete any more).
  std::string flush();

 private:
  // Length of the longest suffix of held_ that is a proper prefix of some stop string.
  size_t partial_stop_length() const;

  std::vector<std::string> stops_;
  Utf8Stream utf8_;
  std::string held_;  // valid UTF-8 not yet shown
  bool stopped_ = false;
};

}  // namespace moenav::server
