// The official `openai` npm client against `moenav serve` (tests/server/openai_client.mjs):
// streamed and whole completions and chat completions must equal the engine's greedy outputs.
// Needs node; installs the client from tests/server/package-lock.json (npm ci) when
// node_modules is missing, and skips with a message when node or the package is unavailable.
#include <cstdlib>

#include "test_server_harness.h"

namespace moenav::testing {
namespace {

int run(const std::string& command) {
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(ServerOpenAiClient, StreamedAndWholeMatchGreedy) {
  const std::string directory = source_path("tests/server");
  if (run("node --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "node is not installed (scripts/setup.sh installs it)";
  if (!std::filesystem::exists(directory + "/node_modules/openai/package.json")) {
    // Network to the npm registry is allowed in CI; offline, this skips.
    if (run("cd '" + directory + "' && npm ci --no-audit --no-fund > /dev/null 2>&1") != 0 ||
        !std::filesystem::exists(directory + "/node_modules/openai/package.json")) {
      GTEST_SKIP() << "the openai npm package is not installed and `npm ci` in tests/server failed";
    }
  }
  GreedyReference reference;
  ASSERT_TRUE(reference.ok());
  const std::string prompt = " The history of the city";
  const Json messages = Json::array({{{"role", "user"}, {"content", "Tell me a story."}}});
  const Json expected = {
      {"model", "tiny-mixtral"},
      {"completion", {{"prompt", prompt}, {"max_tokens", 20}, {"text", reference.text(prompt, 20)}}},
      {"chat", {{"messages", messages}, {"max_tokens", 16},
                {"text", reference.text("<|im_start|>user\nTell me a story.<|im_end|>\n<|im_start|>assistant\n", 16)}}}};
  const std::string expected_path =
      (std::filesystem::temp_directory_path() / ("moenav_openai_" + std::to_string(getpid()) + ".json")).string();
  std::ofstream(expected_path) << expected.dump();

  ServerProcess server;
  ASSERT_TRUE(server.ok()) << server.log();
  const std::string base_url = "http://127.0.0.1:" + std::to_string(server.port()) + "/v1";
  const int status = run("node '" + directory + "/openai_client.mjs' '" + base_url + "' '" + expected_path + "'");
  std::filesystem::remove(expected_path);
  EXPECT_EQ(status, 0) << "tests/server/openai_client.mjs failed (its message is above)";
}

}  // namespace
}  // namespace moenav::testing
