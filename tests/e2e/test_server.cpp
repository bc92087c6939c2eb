// `moenav serve` end to end on the embedded model, over loopback HTTP: the routes, streamed and
// whole completions and chat completions, greedy outputs equal to `moenav generate` and to the
// engine's single-sequence generate(), stop strings, logprobs, errors, client disconnects and a
// clean SIGTERM.
#include <cstdio>
#include <optional>

#include "test_server_harness.h"

namespace moenav::testing {
namespace {

class Server : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServerProcess();
    reference_ = new GreedyReference();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete reference_;
  }
  void SetUp() override {
    ASSERT_TRUE(server_->ok()) << server_->log();
    ASSERT_TRUE(reference_->ok());
  }
  static ServerProcess* server_;
  static GreedyReference* reference_;
};
ServerProcess* Server::server_ = nullptr;
GreedyReference* Server::reference_ = nullptr;

Json completion_body(const std::string& prompt, int max_tokens, bool stream) {
  return {{"model", "tiny-mixtral"}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}, {"stream", stream}};
}

// `moenav generate` prints the prompt, the continuation and a newline on stdout.
std::string run_generate(const std::string& prompt, int tokens) {
  const std::string command = moenav_binary() + " generate " + tiny_model() + " -p '" + prompt + "' -n " +
                              std::to_string(tokens) + " 2>/dev/null";
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return "<popen failed>";
  std::string out;
  char buffer[4096];
  size_t got;
  while ((got = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, got);
  pclose(pipe);
  if (!out.starts_with(prompt) || !out.ends_with("\n")) return "<unexpected output: " + out + ">";
  return out.substr(prompt.size(), out.size() - prompt.size() - 1);
}

TEST_F(Server, HealthModelsMetrics) {
  auto client = server_->client();
  auto health = client->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(Json::parse(health->body)["status"], "ok");
  auto models = client->Get("/v1/models");
  ASSERT_TRUE(models);
  ASSERT_EQ(models->status, 200);
  const Json list = Json::parse(models->body);
  EXPECT_EQ(list["object"], "list");
  EXPECT_EQ(list["data"][0]["id"], "tiny-mixtral");
  auto one = client->Get("/v1/models/tiny-mixtral");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->status, 200);
  auto missing = client->Get("/v1/models/gpt-4");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(Json::parse(missing->body)["error"]["code"], "model_not_found");
  auto metrics = client->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  for (const char* name : {"moenav_requests_total", "moenav_time_to_first_token_seconds_bucket",
                           "moenav_time_per_output_token_seconds_count", "moenav_expert_cache_hits_total",
                           "moenav_expert_cache_misses_total 0", "moenav_expert_bytes_moved_total 0",
                           "moenav_host_memory_rss_bytes", "moenav_generation_tokens_total"}) {
    EXPECT_NE(metrics->body.find(name), std::string::npos) << name;
  }
}

TEST_F(Server, GreedyCompletionEqualsMoenavGenerate) {
  const std::string prompt = " The history of the city";
  const std::string expected = run_generate(prompt, 24);
  ASSERT_FALSE(expected.starts_with("<")) << expected;
  EXPECT_EQ(expected, reference_->text(prompt, 24));
  auto client = server_->client();
  auto whole = post_json(*client, "/v1/completions", completion_body(prompt, 24, false));
  ASSERT_TRUE(whole);
  ASSERT_EQ(whole->status, 200) << whole->body;
  const Json response = Json::parse(whole->body);
  EXPECT_EQ(response["object"], "text_completion");
  EXPECT_EQ(response["choices"][0]["text"], expected);
  EXPECT_EQ(response["usage"]["total_tokens"].get<int>(),
            response["usage"]["prompt_tokens"].get<int>() + response["usage"]["completion_tokens"].get<int>());
  const StreamResult streamed = collect_stream(post_json(*client, "/v1/completions", completion_body(prompt, 24, true)), false);
  EXPECT_EQ(streamed.status, 200);
  EXPECT_TRUE(streamed.done);
  EXPECT_EQ(streamed.text, expected);
  EXPECT_EQ(streamed.finish_reason, response["choices"][0]["finish_reason"]);
}

TEST_F(Server, ChatStreamedAndWholeAgree) {
  const Json messages = Json::array({{{"role", "system"}, {"content", "You are terse."}},
                                     {{"role", "user"}, {"content", "Tell me about the river."}}});
  // The default template (the model has none) is ChatML.
  const std::string prompt = "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nTell me about the river.<|im_end|>\n<|im_start|>assistant\n";
  const std::string expected = reference_->text(prompt, 20);
  auto client = server_->client();
  Json body = {{"model", "tiny-mixtral"}, {"messages", messages}, {"max_tokens", 20}, {"temperature", 0}};
  auto whole = post_json(*client, "/v1/chat/completions", body);
  ASSERT_TRUE(whole);
  ASSERT_EQ(whole->status, 200) << whole->body;
  const Json response = Json::parse(whole->body);
  EXPECT_EQ(response["object"], "chat.completion");
  EXPECT_EQ(response["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(response["choices"][0]["message"]["content"], expected);
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  auto result = post_json(*client, "/v1/chat/completions", body);
  ASSERT_TRUE(result);
  EXPECT_NE(result->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  const StreamResult streamed = collect_stream(result, true);
  EXPECT_TRUE(streamed.done);
  EXPECT_EQ(streamed.text, expected);
  EXPECT_EQ(streamed.usage, response["usage"]);
  bool done = false;
  const std::vector<Json> events = sse_events(result->body, &done);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front()["object"], "chat.completion.chunk");
  EXPECT_EQ(events.front()["choices"][0]["delta"]["role"], "assistant");
}

TEST_F(Server, TokenIdPromptAndLengthFinish) {
  const std::vector<int32_t> ids = reference_->engine().tokenizer().encode(" Once upon a time");
  auto client = server_->client();
  Json body = {{"prompt", ids}, {"max_tokens", 8}, {"temperature", 0}, {"ignore_eos", true}};
  auto result = post_json(*client, "/v1/completions", body);
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  const Json response = Json::parse(result->body);
  EXPECT_EQ(response["choices"][0]["text"], reference_->text_of_ids(ids, 8, false));
  EXPECT_EQ(response["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(response["usage"]["completion_tokens"], 8);
  EXPECT_EQ(response["usage"]["prompt_tokens"], ids.size());
}

TEST_F(Server, StopStringIsExcluded) {
  const std::string prompt = " The history of the city";
  const std::string full = reference_->text(prompt, 32);
  ASSERT_GE(full.size(), 12u);
  // A stop string from the middle of the greedy continuation: the output ends right before it.
  const std::string stop = full.substr(6, 4);
  const std::string expected = full.substr(0, full.find(stop));
  auto client = server_->client();
  for (bool stream : {false, true}) {
    Json body = completion_body(prompt, 32, stream);
    body["stop"] = Json::array({"\x01never", stop});
    auto result = post_json(*client, "/v1/completions", body);
    ASSERT_TRUE(result);
    ASSERT_EQ(result->status, 200) << result->body;
    if (stream) {
      const StreamResult streamed = collect_stream(result, false);
      EXPECT_EQ(streamed.text, expected);
      EXPECT_EQ(streamed.finish_reason, "stop");
    } else {
      const Json response = Json::parse(result->body);
      EXPECT_EQ(response["choices"][0]["text"], expected);
      EXPECT_EQ(response["choices"][0]["finish_reason"], "stop");
    }
  }
}

TEST_F(Server, LogprobsAreReported) {
  auto client = server_->client();
  Json body = completion_body(" The river", 5, false);
  body["logprobs"] = 3;
  body["ignore_eos"] = true;
  auto result = post_json(*client, "/v1/completions", body);
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  const Json logprobs = Json::parse(result->body)["choices"][0]["logprobs"];
  ASSERT_EQ(logprobs["tokens"].size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_LE(logprobs["token_logprobs"][i].get<double>(), 0.0);
    EXPECT_EQ(logprobs["top_logprobs"][i].size(), 3u);
  }
  Json chat = {{"messages", Json::array({{{"role", "user"}, {"content", "Hi"}}})}, {"max_tokens", 4},
               {"temperature", 0}, {"logprobs", true}, {"top_logprobs", 2}, {"ignore_eos", true}};
  auto chat_result = post_json(*client, "/v1/chat/completions", chat);
  ASSERT_TRUE(chat_result);
  ASSERT_EQ(chat_result->status, 200) << chat_result->body;
  const Json content = Json::parse(chat_result->body)["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 4u);
  EXPECT_EQ(content[0]["top_logprobs"].size(), 2u);
  EXPECT_TRUE(content[0]["bytes"].is_array());
}

TEST_F(Server, SeededSamplingIsReproducible) {
  auto client = server_->client();
  Json body = {{"prompt", " The weather"}, {"max_tokens", 16}, {"temperature", 1.0}, {"top_p", 0.9},
               {"top_k", 40}, {"seed", 1234}, {"ignore_eos", true}};
  auto first = post_json(*client, "/v1/completions", body);
  auto second = post_json(*client, "/v1/completions", body);
  ASSERT_TRUE(first && second);
  ASSERT_EQ(first->status, 200);
  EXPECT_EQ(Json::parse(first->body)["choices"][0]["text"], Json::parse(second->body)["choices"][0]["text"]);
}

TEST_F(Server, ErrorsHaveOpenAiShape) {
  auto client = server_->client();
  auto bad = post_json(*client, "/v1/completions", {{"prompt", "x"}, {"temperature", "hot"}});
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  const Json error = Json::parse(bad->body)["error"];
  EXPECT_EQ(error["type"], "invalid_request_error");
  EXPECT_EQ(error["param"], "temperature");
  EXPECT_TRUE(error["message"].is_string());
  EXPECT_TRUE(error.contains("code"));
  auto too_long = post_json(*client, "/v1/completions", {{"prompt", "x"}, {"max_tokens", 5000}});
  ASSERT_TRUE(too_long);
  EXPECT_EQ(too_long->status, 400);
  EXPECT_EQ(Json::parse(too_long->body)["error"]["code"], "context_length_exceeded");
  EXPECT_NE(too_long->body.find("2048"), std::string::npos) << "the message names the limit";
  auto unknown = client->Get("/v1/nothing");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  EXPECT_EQ(Json::parse(unknown->body)["error"]["type"], "invalid_request_error");
  // Unknown fields are ignored, as OpenAI does.
  auto extra = post_json(*client, "/v1/completions", {{"prompt", "x"}, {"max_tokens", 1}, {"frobnicate", {1, 2}}});
  ASSERT_TRUE(extra);
  EXPECT_EQ(extra->status, 200) << extra->body;
}

double metric(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + name.size() + 2));
}

TEST_F(Server, ClientDisconnectCancelsItsSequence) {
  const int fd = connect_loopback(server_->port());
  ASSERT_GE(fd, 0);
  const std::string body = Json{{"prompt", " The city"}, {"max_tokens", 2000}, {"ignore_eos", true}, {"stream", true}}.dump();
  ASSERT_TRUE(send_all(fd, "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body));
  const std::string first = receive(fd, 10.0, nullptr, 200);
  ASSERT_EQ(status_of(first), 200) << first;
  close(fd);
  auto client = server_->client();
  // The engine drops the sequence long before its 2000 tokens (2+ s) would be done.
  std::string metrics;
  for (int attempt = 0; attempt < 100; ++attempt) {
    metrics = client->Get("/metrics")->body;
    if (metrics.find("moenav_sequences_finished_total{reason=\"cancelled\"}") != std::string::npos &&
        metric(metrics, "moenav_sequences_in_flight") == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_NE(metrics.find("moenav_sequences_finished_total{reason=\"cancelled\"}"), std::string::npos) << metrics;
  EXPECT_EQ(metric(metrics, "moenav_sequences_in_flight"), 0);
}

TEST(ServerShutdown, SigtermFinishesInFlightAndExitsZero) {
  ServerProcess server;
  ASSERT_TRUE(server.ok()) << server.log();
  auto client = server.client();
  std::optional<httplib::Result> drained;  // httplib::Result has no default constructor
  std::thread request([&] {
    drained.emplace(post_json(*client, "/v1/completions", {{"prompt", " The city"}, {"max_tokens", 400}, {"ignore_eos", true}, {"stream", true}}));
  });
  // SIGTERM while the request is running: it drains to completion, then the process exits 0.
  for (int attempt = 0; attempt < 500; ++attempt) {
    auto health = server.client()->Get("/health");
    if (health && Json::parse(health->body)["sequences_in_flight"] == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(server.terminate(60.0), 0) << server.log();
  request.join();
  const StreamResult streamed = collect_stream(*drained, false);
  EXPECT_EQ(streamed.status, 200);
  EXPECT_TRUE(streamed.done);
  EXPECT_EQ(streamed.finish_reason, "length");
  // Afterwards nothing listens any more.
  EXPECT_FALSE(server.client()->Get("/health"));
}

}  // namespace
}  // namespace moenav::testing
