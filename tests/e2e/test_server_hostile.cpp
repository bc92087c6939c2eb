// Malformed and hostile requests: bad JSON (every truncation of a valid body), wrong types,
// huge and negative numbers, invalid UTF-8, oversize bodies, unknown routes, broken HTTP, and
// slowloris clients that send headers slowly and stall. Each gets the right 4xx (or, for
// stalled or broken connections, is closed), and the server keeps answering normal requests
// correctly throughout.
#include "test_server_harness.h"

namespace moenav::testing {
namespace {

struct Case {
  std::string name;
  std::string method;
  std::string path;
  std::string body;  // sent as is, with Content-Type: application/json
  int expected;      // HTTP status
};

Json with(const Json& base, const std::string& key, const Json& value) {
  Json body = base;
  body[key] = value;
  return body;
}

const Json kCompletion = {{"prompt", " The city"}, {"max_tokens", 2}, {"temperature", 0}};
const Json kChat = {{"messages", Json::array({{{"role", "user"}, {"content", "Hi"}}})}, {"max_tokens", 2}};

std::vector<Case> json_cases() {
  std::vector<Case> cases;
  const std::string valid = kCompletion.dump();
  // Every proper prefix of a valid body is invalid JSON.
  for (size_t length = 0; length < valid.size(); ++length) {
    cases.push_back({"truncated at " + std::to_string(length), "POST", "/v1/completions", valid.substr(0, length), 400});
  }
  for (const char* body : {"null", "[]", "123", "\"prompt\"", "true", "{}x", "{\"prompt\": }", "{'prompt': 'x'}",
                           "{\"prompt\": \"x\",}", "{\"prompt\": NaN}", "{\"max_tokens\": 1e400, \"prompt\": \"x\"}",
                           "{\"prompt\": \"\\ud800\"}"}) {
    cases.push_back({std::string("bad json ") + body, "POST", "/v1/completions", body, 400});
  }
  cases.push_back({"deep nesting", "POST", "/v1/completions", std::string(100000, '[') + std::string(100000, ']'), 400});
  cases.push_back({"deep nesting chat", "POST", "/v1/chat/completions",
                   "{\"messages\": " + std::string(5000, '[') + std::string(5000, ']') + "}", 400});
  return cases;
}

std::vector<Case> field_cases() {
  std::vector<Case> cases;
  auto add = [&](const std::string& name, const Json& body, int expected, const char* path = "/v1/completions") {
    cases.push_back({name, "POST", path, body.dump(), expected});
  };
  const Json wrong_values[] = {"text", 1.5, true, Json::array(), Json::object()};
  for (const char* key : {"max_tokens", "temperature", "top_p", "top_k", "seed", "logprobs", "n"}) {
    for (const Json& value : wrong_values) {
      const bool is_number_field = std::string(key) == "temperature" || std::string(key) == "top_p";
      if (is_number_field && value.is_number()) continue;  // 1.5 is a valid temperature; checked below
      add(std::string(key) + " = " + value.dump(), with(kCompletion, key, value), 400);
    }
  }
  for (const Json& value : {Json(1), Json(true), Json::object(), Json::array({1, "a"}), Json::array({Json::array()})}) {
    add("prompt = " + value.dump(), with(kCompletion, "prompt", value), 400);
  }
  for (const Json& value : {Json(1), Json(true), Json::object(), Json::array({1}), Json::array({"a", "b", "c", "d", "e"})}) {
    add("stop = " + value.dump(), with(kCompletion, "stop", value), 400);
  }
  for (const Json& value : {Json(1), Json("yes"), Json::object()}) {
    add("stream = " + value.dump(), with(kCompletion, "stream", value), 400);
  }
  // Out-of-range and huge numbers.
  for (const auto& [key, value] : std::vector<std::pair<std::string, Json>>{
           {"max_tokens", 0}, {"max_tokens", -1}, {"max_tokens", 1000000000}, {"max_tokens", INT64_MAX},
           {"max_tokens", UINT64_MAX}, {"max_tokens", -INT64_MAX}, {"max_tokens", 1e300}, {"temperature", -0.1},
           {"temperature", 2.5}, {"temperature", 1e308}, {"temperature", -1e308}, {"top_p", -1}, {"top_p", 1.01},
           {"top_k", -2}, {"top_k", 1e12}, {"top_k", INT64_MAX}, {"seed", 1e30}, {"seed", "1"}, {"logprobs", -1},
           {"logprobs", 6}, {"n", 2}, {"n", 0}, {"best_of", 3}, {"echo", true}, {"suffix", "x"}}) {
    add(key + " = " + value.dump(), with(kCompletion, key, value), 400);
  }
  for (const Json& ids : {Json::array({-1}), Json::array({4096}), Json::array({UINT64_MAX}), Json::array({1.5}),
                          Json::array()}) {
    add("token ids " + ids.dump(), with(kCompletion, "prompt", ids), 400);
  }
  add("empty prompt", with(kCompletion, "prompt", ""), 400);
  add("prompt over context", with(kCompletion, "prompt", std::string(30000, 'z') + " a b c d"), 400);
  add("missing prompt", Json{{"max_tokens", 1}}, 400);
  // Chat messages.
  for (const Json& messages : {Json("hi"), Json::array(), Json::array({1}), Json::array({{{"content", "x"}}}),
                               Json::array({{{"role", "wizard"}, {"content", "x"}}}),
                               Json::array({{{"role", "user"}, {"content", 5}}}),
                               Json::array({{{"role", "user"}, {"content", Json::array({{{"type", "image_url"}}})}}}),
                               Json::array({{{"role", 7}, {"content", "x"}}})}) {
    add("messages = " + messages.dump(), with(kChat, "messages", messages), 400, "/v1/chat/completions");
  }
  // The chat route validates the same parameters.
  for (const char* key : {"max_tokens", "temperature", "top_p", "seed", "stream", "stop"}) {
    for (const Json& value : {Json("text"), Json::array({Json::object()}), Json::object()}) {
      if (std::string(key) == "stop" && value.is_string()) continue;  // a string is a valid stop
      add(std::string("chat ") + key + " = " + value.dump(), with(kChat, key, value), 400, "/v1/chat/completions");
    }
  }
  add("missing messages", Json{{"max_tokens", 1}}, 400, "/v1/chat/completions");
  add("top_logprobs without logprobs", with(kChat, "top_logprobs", 2), 400, "/v1/chat/completions");
  add("top_logprobs 21", with(with(kChat, "logprobs", true), "top_logprobs", 21), 400, "/v1/chat/completions");
  add("stream_options not object", with(kChat, "stream_options", 1), 400, "/v1/chat/completions");
  add("max_completion_tokens huge", with(kChat, "max_completion_tokens", 1 << 30), 400, "/v1/chat/completions");
  // Valid edge values are accepted (so the checks are not simply "reject everything").
  add("seed negative ok", with(kCompletion, "seed", -5), 200);
  add("seed u64 ok", with(kCompletion, "seed", UINT64_MAX), 200);
  add("temperature 1.5 ok", with(kCompletion, "temperature", 1.5), 200);
  add("nulls mean default", with(with(kCompletion, "top_p", nullptr), "stop", nullptr), 200);
  return cases;
}

std::vector<Case> encoding_and_route_cases() {
  std::vector<Case> cases;
  for (const char* bad : {"\xff", "\xc3\x28", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "a\x80z"}) {
    cases.push_back({"invalid utf-8 in prompt", "POST", "/v1/completions", std::string("{\"prompt\": \"") + bad + "\"}", 400});
    cases.push_back({"invalid utf-8 in message", "POST", "/v1/chat/completions",
                     std::string("{\"messages\": [{\"role\": \"user\", \"content\": \"") + bad + "\"}]}", 400});
  }
  cases.push_back({"invalid utf-8 in key", "POST", "/v1/completions", "{\"pr\xffompt\": \"x\"}", 400});
  for (const char* path : {"/", "/v1", "/v1/completion", "/v2/completions", "/v1/chat", "/../../etc/passwd",
                           "/v1/completions/extra", "/metrics/x", "/%00", "/v1/models/../../x"}) {
    cases.push_back({std::string("unknown route ") + path, "GET", path, "", 404});
  }
  cases.push_back({"long path", "GET", "/v1/models/" + std::string(7000, 'a'), "", 404});
  cases.push_back({"POST to models", "POST", "/v1/models", "{}", 404});
  cases.push_back({"DELETE completions", "DELETE", "/v1/completions", "", 404});
  cases.push_back({"GET completions", "GET", "/v1/completions", "", 405});
  cases.push_back({"GET chat", "GET", "/v1/chat/completions", "", 405});
  return cases;
}

std::string raw_request(const Case& c) {
  std::string request = c.method + " " + c.path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  if (c.method == "POST") {
    request += "Content-Type: application/json\r\nContent-Length: " + std::to_string(c.body.size()) + "\r\n";
  }
  return request + "\r\n" + c.body;
}

int send_case(int port, const std::string& request, std::string* response) {
  const int fd = connect_loopback(port);
  if (fd < 0) return -1;
  send_all(fd, request);
  *response = receive(fd, 30.0);
  close(fd);
  return status_of(*response);
}

class Hostile : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServerProcess({"--read-timeout", "2", "--write-timeout", "5"});
    reference_ = new GreedyReference();
    expected_ = reference_->text(" The history of the city", 12);
  }
  static void TearDownTestSuite() {
    delete server_;
    delete reference_;
  }
  void SetUp() override { ASSERT_TRUE(server_->ok()) << server_->log(); }

  // A normal request, answered correctly.
  static void expect_healthy() {
    auto client = server_->client();
    auto result = post_json(*client, "/v1/completions",
                            {{"prompt", " The history of the city"}, {"max_tokens", 12}, {"temperature", 0}});
    ASSERT_TRUE(result) << "server stopped answering";
    ASSERT_EQ(result->status, 200) << result->body;
    EXPECT_EQ(Json::parse(result->body)["choices"][0]["text"], expected_);
  }

  static ServerProcess* server_;
  static GreedyReference* reference_;
  static std::string expected_;
};
ServerProcess* Hostile::server_ = nullptr;
GreedyReference* Hostile::reference_ = nullptr;
std::string Hostile::expected_;

TEST_F(Hostile, MalformedRequestsGetTheRight4xx) {
  std::vector<Case> cases = json_cases();
  for (auto& group : {field_cases(), encoding_and_route_cases()}) cases.insert(cases.end(), group.begin(), group.end());
  EXPECT_GE(cases.size(), 200u);
  int answered = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    std::string response;
    const int status = send_case(server_->port(), raw_request(c), &response);
    EXPECT_EQ(status, c.expected) << c.name << "\n" << response.substr(0, 400);
    if (status >= 400 && status < 500) {
      // OpenAI's error shape on every 4xx.
      const size_t body_at = response.find("\r\n\r\n");
      const Json body = Json::parse(response.substr(body_at + 4), nullptr, false);
      EXPECT_TRUE(body.contains("error") && body["error"].contains("message") && body["error"].contains("type") &&
                  body["error"].contains("param") && body["error"].contains("code"))
          << c.name << ": " << response.substr(0, 400);
    }
    answered += status == c.expected;
    if (i % 25 == 0) expect_healthy();
  }
  std::printf("{\"hostile_cases\": %zu, \"answered_as_expected\": %d}\n", cases.size(), answered);
  expect_healthy();
  EXPECT_TRUE(server_->alive());
}

TEST_F(Hostile, OversizeBodiesGet413) {
  // Declared 10 MB body: refused from the headers, before the body is read.
  const int fd = connect_loopback(server_->port());
  ASSERT_GE(fd, 0);
  send_all(fd, "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               "Content-Length: 10485760\r\n\r\n{\"prompt\": \"");
  const std::string response = receive(fd, 10.0);
  close(fd);
  EXPECT_EQ(status_of(response), 413) << response.substr(0, 300);
  EXPECT_NE(response.find("request_too_large"), std::string::npos);
  // An actual 10 MB body through a normal client.
  auto client = server_->client();
  auto result = client->Post("/v1/completions", "{\"prompt\": \"" + std::string(10 << 20, 'a') + "\"}", "application/json");
  if (result) {  // else the server closed while the client was still writing
    EXPECT_EQ(result->status, 413);
  }
  expect_healthy();
}

TEST_F(Hostile, BrokenHttpIsRefusedOrClosed) {
  const std::vector<std::string> requests = {
      "GARBAGE\r\n\r\n",
      "GET / HTTP/9.9\r\n\r\n",
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
      "GET /" + std::string(20000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /health HTTP/1.1\r\nX-Long: " + std::string(20000, 'b') + "\r\n\r\n",
      std::string("\x00\x01\x02\x03\xff\xfe\r\n\r\n", 10),
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
  };
  for (const std::string& request : requests) {
    std::string response;
    const int status = send_case(server_->port(), request, &response);
    // Either a 4xx, or the connection is closed without one: never a 2xx/5xx or a hang.
    EXPECT_TRUE(status == 0 || (status >= 400 && status < 500)) << status << " for " << request.substr(0, 60);
  }
  expect_healthy();
}

TEST_F(Hostile, SlowlorisClientsAreTimedOut) {
  // Ten clients send part of their headers, a byte at a time, then stall. The server
  // (--read-timeout 2) drops them; normal requests are answered meanwhile.
  std::vector<int> sockets;
  for (int i = 0; i < 10; ++i) {
    const int fd = connect_loopback(server_->port());
    ASSERT_GE(fd, 0);
    for (char c : std::string("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")) {
      send_all(fd, std::string(1, c));
    }
    sockets.push_back(fd);
  }
  expect_healthy();
  const auto start = std::chrono::steady_clock::now();
  for (int fd : sockets) {
    bool closed = false;
    const std::string response = receive(fd, 15.0, &closed);
    EXPECT_TRUE(closed) << "a stalled client was not timed out";
    EXPECT_TRUE(response.empty() || status_of(response) >= 400) << response.substr(0, 200);
    close(fd);
  }
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(waited, 15.0);
  // A body that stalls half way is timed out the same way.
  const int fd = connect_loopback(server_->port());
  send_all(fd, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\":");
  bool closed = false;
  receive(fd, 15.0, &closed);
  EXPECT_TRUE(closed);
  close(fd);
  expect_healthy();
}

}  // namespace
}  // namespace moenav::testing
