// `moenav serve` driven by curl, the way people try an OpenAI-compatible server from a shell:
// streamed (-N, server-sent events) and whole completions and chat completions, each equal to
// the engine's greedy output. Skips with a message when curl is not installed.
#include <cstdio>
#include <cstdlib>

#include "test_server_harness.h"

namespace moenav::testing {
namespace {

// curl's stdout for a JSON POST to `path`; the body goes through a file so no shell quoting
// of the JSON is needed.
std::string curl_post(int port, const std::string& path, const Json& body, bool stream) {
  const std::string body_path = (std::filesystem::temp_directory_path() /
                                 ("moenav_curl_" + std::to_string(getpid()) + ".json"))
                                    .string();
  std::ofstream(body_path) << body.dump();
  const std::string command = std::string("curl -s --max-time 60 ") + (stream ? "-N " : "") +
                              "-H 'Content-Type: application/json' --data-binary @'" + body_path +
                              "' " + "http://127.0.0.1:" + std::to_string(port) + path;
  std::string out;
  if (FILE* pipe = popen(command.c_str(), "r")) {
    char buffer[4096];
    size_t got;
    while ((got = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, got);
    pclose(pipe);
  }
  std::filesystem::remove(body_path);
  return out;
}

// The text of a streamed response: the concatenated deltas of its events, which must end in [DONE].
std::string streamed_text(const std::string& body, bool chat) {
  bool done = false;
  std::string text;
  for (const Json& event : sse_events(body, &done)) {
    if (event["choices"].empty()) continue;  // the usage-only event
    const Json& choice = event["choices"][0];
    const Json& piece = chat ? choice["delta"].value("content", Json("")) : choice["text"];
    if (piece.is_string()) text += piece.get<std::string>();
  }
  EXPECT_TRUE(done) << "no [DONE] event in: " << body;
  return text;
}

TEST(ServerCurl, StreamedAndWholeMatchGreedy) {
  if (std::system("curl --version > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "curl is not installed (scripts/setup.sh installs it)";
  GreedyReference reference;
  ASSERT_TRUE(reference.ok());
  ServerProcess server;
  ASSERT_TRUE(server.ok()) << server.log();
  const std::string prompt = " The history of the city";
  const std::string expected_completion = reference.text(prompt, 24);
  const Json messages = Json::array({{{"role", "user"}, {"content", "Tell me a story."}}});
  // The tiny model has no chat template: the documented ChatML default.
  const std::string expected_chat =
      reference.text("<|im_start|>user\nTell me a story.<|im_end|>\n<|im_start|>assistant\n", 16);
  ASSERT_FALSE(expected_completion.empty());
  ASSERT_FALSE(expected_chat.empty());
  for (bool stream : {false, true}) {
    SCOPED_TRACE(stream ? "streamed" : "whole");
    const Json completion = {{"model", "tiny-mixtral"},
                             {"prompt", prompt},
                             {"max_tokens", 24},
                             {"temperature", 0},
                             {"stream", stream}};
    const std::string completion_out =
        curl_post(server.port(), "/v1/completions", completion, stream);
    const Json chat = {{"model", "tiny-mixtral"},
                       {"messages", messages},
                       {"max_tokens", 16},
                       {"temperature", 0},
                       {"stream", stream}};
    const std::string chat_out = curl_post(server.port(), "/v1/chat/completions", chat, stream);
    if (stream) {
      EXPECT_EQ(streamed_text(completion_out, false), expected_completion);
      EXPECT_EQ(streamed_text(chat_out, true), expected_chat);
    } else {
      const Json completion_json = Json::parse(completion_out, nullptr, false);
      ASSERT_FALSE(completion_json.is_discarded()) << completion_out;
      EXPECT_EQ(completion_json["choices"][0]["text"], expected_completion);
      const Json chat_json = Json::parse(chat_out, nullptr, false);
      ASSERT_FALSE(chat_json.is_discarded()) << chat_out;
      EXPECT_EQ(chat_json["choices"][0]["message"]["content"], expected_chat);
    }
  }
}

}  // namespace
}  // namespace moenav::testing
