#include "tune/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace moenav::tune {

Progress::Progress(bool enabled, std::FILE* stream)
    : enabled_(enabled), tty_(isatty(fileno(stream)) != 0), stream_(stream),
      start_(std::chrono::steady_clock::now()) {}

std::string Progress::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t total = static_cast<int64_t>(std::lround(seconds));
  if (total < 60) return fmt::format("{}s", total);
  if (total < 3600) return fmt::format("{}m{:02d}s", total / 60, total % 60);
  return fmt::format("{}h{:02d}m", total / 3600, (total % 3600) / 60);
}

void Progress::start(const std::string& what) {
  current_ = what;
  if (tty_) draw();
}

void Progress::done(double estimated_seconds, int points_measured, int points_total) {
  done_ += estimated_seconds;
  points_ = points_measured;
  points_total_ = points_total;
  draw();
}

void Progress::note(const std::string& line) {
  if (!enabled_) return;
  if (tty_ && drawn_) fmt::print(stream_, "\r\033[K");
  fmt::print(stream_, "{}\n", line);
  drawn_ = false;
  if (tty_) draw();
}

void Progress::draw() {
  if (!enabled_ || finished_) return;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double fraction = planned_ > 0 ? std::clamp(done_ / planned_, 0.0, 1.0) : 0.0;
  // Rate observed so far (elapsed per estimated second) applied to what is left.
  const double eta = done_ > 0 ? elapsed / done_ * std::max(0.0, planned_ - done_) : planned_;
  constexpr int kWidth = 24;
  const int filled = static_cast<int>(fraction * kWidth);
  const std::string bar = std::string(static_cast<size_t>(filled), '#') + std::string(static_cast<size_t>(kWidth - filled), '.');
  std::string what = current_;
  if (what.size() > 48) what = what.substr(0, 45) + "...";
  const std::string line = fmt::format("tune [{}] {:3.0f}%  {} point{} measured / {} in space  elapsed {}  ETA {}  {}",
                                       bar, fraction * 100, points_, points_ == 1 ? "" : "s", points_total_,
                                       format_duration(elapsed), format_duration(eta), what);
  if (tty_) fmt::print(stream_, "\r\033[K{}", line);
  else fmt::print(stream_, "{}\n", line);
  std::fflush(stream_);
  drawn_ = true;
}

void Progress::finish() {
  if (finished_) return;
  if (enabled_ && tty_ && drawn_) fmt::print(stream_, "\n");
  finished_ = true;
}

}  // namespace moenav::tune
