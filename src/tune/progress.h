// A progress bar with ETA on stderr for long tuning runs: work is counted in estimated seconds
// (the cost model's guess of each task), so the ETA follows what is left rather than a task
// count. On a terminal the bar redraws in place; otherwise one line per finished task.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

namespace moenav::tune {

class Progress {
 public:
  explicit Progress(bool enabled = true, std::FILE* stream = stderr);
  ~Progress() { finish(); }

  // Adds planned work (estimated seconds) to the total.
  void plan(double estimated_seconds) { planned_ += estimated_seconds; }
  // Re-estimates what is left (as predictions improve): the total becomes done + remaining.
  void replan(double remaining_seconds) { planned_ = done_ + remaining_seconds; }
  // A task starts: what it is.
  void start(const std::string& what);
  // A task ends: its estimate moves to done; points counts distinct points measured so far.
  void done(double estimated_seconds, int points_measured, int points_total);
  void note(const std::string& line);  // a line that stays above the bar
  void finish();

  static std::string format_duration(double seconds);  // "1m23s"

 private:
  void draw();
  bool enabled_, tty_;
  std::FILE* stream_;
  double planned_ = 0.0, done_ = 0.0;
  int points_ = 0, points_total_ = 0;
  std::string current_;
  std::chrono::steady_clock::time_point start_;
  bool drawn_ = false, finished_ = false;
};

}  // namespace moenav::tune
