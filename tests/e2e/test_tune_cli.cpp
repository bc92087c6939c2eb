// `moenav tune` and `moenav report` as users run them: the written config loads in bench, an
// impossible goal exits 2 naming the binding constraint, a tune killed with SIGKILL resumes from
// the points it had committed, and the HTML report loads in headless Chromium without errors.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "test_paths.h"
#include "tune/results_store.h"

namespace moenav {
namespace {

namespace fs = std::filesystem;

struct Output {
  int code = -1;
  std::string text;  // stdout and stderr
};

size_t count(const std::string& text, const std::string& word) {
  size_t n = 0;
  for (size_t at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) ++n;
  return n;
}

Output run(const std::string& command) {
  Output out;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return out;
  std::array<char, 4096> buffer{};
  while (size_t n = fread(buffer.data(), 1, buffer.size(), pipe)) out.text.append(buffer.data(), n);
  const int status = pclose(pipe);
  out.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

std::string temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("moenav_cli_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string tune_command(const std::string& dir, const std::string& goal) {
  return fmt::format("cd {} && {} tune {} --space small --prompt-tokens 48 --gen-tokens 8 --reps 1 --quality-tokens 1024 "
                     "--quality-seq 256 --trace-tokens 64 --text {} --db {}/r.db -o {}/tuned.json --report {}/report.html -q {}",
                     moenav::testing::source_path(""), moenav::testing::moenav_binary(),
                     moenav::testing::source_path("models/tiny-mixtral"),
                     moenav::testing::source_path("data/wikitext-2-test-head.txt"), dir, dir, dir, goal);
}

TEST(TuneCli, WritesAConfigThatBenchLoads) {
  const std::string dir = temp_dir("config");
  const Output tuned = run(tune_command(dir, "--objective 'min latency' --constraint 'ppl <= 1.05*base'"));
  ASSERT_EQ(tuned.code, 0) << tuned.text;
  EXPECT_NE(tuned.text.find("Pareto front"), std::string::npos) << tuned.text;
  EXPECT_NE(tuned.text.find("Recommended:"), std::string::npos) << tuned.text;
  EXPECT_NE(tuned.text.find("Report: "), std::string::npos) << tuned.text;
  ASSERT_TRUE(fs::exists(dir + "/tuned.json"));
  const Output bench = run(fmt::format("{} bench {} --config {}/tuned.json --prompt-tokens 16 --gen-tokens 4 --reps 1 --json "
                                       "--prompt-file {}",
                                       moenav::testing::moenav_binary(), moenav::testing::source_path("models/tiny-mixtral"), dir,
                                       moenav::testing::source_path("data/wikitext-2-test-head.txt")));
  EXPECT_EQ(bench.code, 0) << bench.text;
  const Output table = run(fmt::format("{} report --db {}/r.db --table", moenav::testing::moenav_binary(), dir));
  EXPECT_EQ(table.code, 0) << table.text;
  EXPECT_NE(table.text.find("| Baseline"), std::string::npos) << table.text;
  EXPECT_NE(table.text.find("TPOT (s)"), std::string::npos) << table.text;
}

TEST(TuneCli, ImpossibleGoalExitsTwoNamingTheConstraint) {
  const std::string dir = temp_dir("infeasible");
  const Output tuned = run(tune_command(dir, "--objective 'minimize latency under 1KB'"));
  EXPECT_EQ(tuned.code, 2) << tuned.text;
  EXPECT_NE(tuned.text.find("No configuration satisfies every constraint"), std::string::npos) << tuned.text;
  EXPECT_NE(tuned.text.find("gpu_mem <= 1000 B"), std::string::npos) << tuned.text;
  EXPECT_FALSE(fs::exists(dir + "/tuned.json"));
  const Output bad = run(tune_command(dir, "--objective 'max latency'"));
  EXPECT_EQ(bad.code, 1) << bad.text;
  EXPECT_NE(bad.text.find("min latency"), std::string::npos) << bad.text;
}

TEST(TuneCli, ResumesAfterKill) {
  const std::string dir = temp_dir("kill");
  const std::string command = tune_command(dir, "--objective 'min tpot' --exhaustive");
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + command.substr(command.find("&&") + 3) + " > /dev/null 2>&1").c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until a few points are committed, then kill -9 mid-run.
  size_t stored = 0;
  for (int i = 0; i < 600 && stored < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!fs::exists(dir + "/r.db")) continue;
    auto store = tune::ResultsStore::open(dir + "/r.db");
    if (store.ok()) {
      stored = 0;
      for (const tune::StoredRun& r : (*store)->runs()) stored += (*store)->points(r.model_hash).size();
    }
  }
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_GE(stored, 3u) << "the tune run did not commit points in time";
  const Output resumed = run(command);
  ASSERT_EQ(resumed.code, 0) << resumed.text;
  // "measured N (..%), M at the full workload (K new)": fewer new points than the whole space.
  const size_t at = resumed.text.find(" new)");
  ASSERT_NE(at, std::string::npos) << resumed.text;
  const size_t open = resumed.text.rfind('(', at);
  const int fresh = std::stoi(resumed.text.substr(open + 1));
  const size_t full_at = resumed.text.rfind(" at the full workload", at);
  const size_t full_begin = resumed.text.rfind(' ', full_at - 1);
  const int full = std::stoi(resumed.text.substr(full_begin + 1));
  EXPECT_LT(fresh, full) << resumed.text;
}

TEST(TuneCli, ReportLoadsInHeadlessChromium) {
  std::string browser;
  for (const char* candidate : {"chromium", "chromium-browser", "google-chrome"}) {
    if (run(fmt::format("command -v {}", candidate)).code == 0) {
      browser = candidate;
      break;
    }
  }
  if (browser.empty()) GTEST_SKIP() << "chromium is not installed (apt-get install chromium); report not loaded";
  const std::string dir = temp_dir("chromium");
  const Output tuned = run(tune_command(dir, "--objective 'min latency'"));
  ASSERT_EQ(tuned.code, 0) << tuned.text;
  const Output rebuilt = run(fmt::format("{} report --db {}/r.db -o {}/rebuilt.html", moenav::testing::moenav_binary(), dir, dir));
  ASSERT_EQ(rebuilt.code, 0) << rebuilt.text;
  for (const std::string file : {"report.html", "rebuilt.html"}) {
    const Output dom = run(fmt::format(
        "timeout 120 {} --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update "
        "--disable-sync --no-first-run --user-data-dir={}/profile --enable-logging=stderr --v=0 --dump-dom file://{}/{}",
        browser, dir, dir, file));
    ASSERT_EQ(dom.code, 0) << dom.text;
    EXPECT_NE(dom.text.find("moenav tune report"), std::string::npos) << file;
    EXPECT_NE(dom.text.find("<svg"), std::string::npos) << file;
    EXPECT_NE(dom.text.find("Pareto front"), std::string::npos) << file;
    EXPECT_NE(dom.text.find("Predicted vs measured"), std::string::npos) << file;
    EXPECT_EQ(dom.text.find("Uncaught"), std::string::npos) << dom.text;
    EXPECT_EQ(dom.text.find("CONSOLE"), std::string::npos) << "console messages from the page:\n" << dom.text;
    // Offline: nothing fetched from elsewhere.
    std::ifstream stream(dir + "/" + file);
    std::stringstream html;
    html << stream.rdbuf();
    EXPECT_EQ(count(html.str(), "http://"), count(html.str(), "http://www.w3.org/2000/svg"));
    EXPECT_EQ(html.str().find("https://"), std::string::npos);
    EXPECT_EQ(html.str().find("<script"), std::string::npos);
  }
}

}  // namespace
}  // namespace moenav
