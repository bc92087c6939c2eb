// Continuous batching under load: 32 concurrent streaming clients x 64 tokens, each with its own
// prompt; every stream must be complete and equal to that prompt's single-sequence greedy output
// (so batching changes nothing). Also prints aggregate tokens/s for 1, 8 and 32 clients as JSON
// lines (a measurement, never asserted).
#include <atomic>

#include "test_server_harness.h"

namespace moenav::testing {
namespace {

constexpr int kTokens = 64;

std::string prompt_for(int client) {
  static const char* const kStarts[] = {" The history of the city", " Once upon a time", " The river flows",
                                        " In the morning the", " Scientists have found", " The old house",
                                        " She opened the door and", " The king said"};
  return std::string(kStarts[client % 8]) + " number " + std::to_string(client) +
         (client % 3 == 0 ? " and its people" : "");
}

Json stream_body(int client) {
  return {{"model", "tiny-mixtral"}, {"prompt", prompt_for(client)}, {"max_tokens", kTokens},
          {"temperature", 0}, {"stream", true}, {"ignore_eos", true}, {"stream_options", {{"include_usage", true}}}};
}

struct Round {
  std::vector<StreamResult> results;
  double seconds = 0;
};

Round run_clients(const ServerProcess& server, int clients) {
  Round round;
  round.results.resize(static_cast<size_t>(clients));
  std::vector<std::thread> threads;
  std::atomic<int> ready{0};
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      auto client = server.client(120);
      ++ready;
      round.results[static_cast<size_t>(i)] = collect_stream(post_json(*client, "/v1/completions", stream_body(i)), false);
    });
  }
  for (std::thread& thread : threads) thread.join();
  round.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return round;
}

TEST(ServerConcurrency, ThirtyTwoStreamsEqualSingleClientGreedy) {
  GreedyReference reference;
  ASSERT_TRUE(reference.ok());
  std::vector<std::string> expected;
  for (int i = 0; i < 32; ++i) expected.push_back(reference.text(prompt_for(i), kTokens, false));
  ServerProcess server;
  ASSERT_TRUE(server.ok()) << server.log();
  // Single client first: the same server, one request at a time.
  auto client = server.client(120);
  const StreamResult single = collect_stream(post_json(*client, "/v1/completions", stream_body(0)), false);
  EXPECT_EQ(single.text, expected[0]);

  const Round round = run_clients(server, 32);
  for (int i = 0; i < 32; ++i) {
    const StreamResult& result = round.results[static_cast<size_t>(i)];
    EXPECT_EQ(result.status, 200) << "client " << i;
    EXPECT_TRUE(result.done) << "client " << i;
    EXPECT_EQ(result.finish_reason, "length") << "client " << i;
    EXPECT_EQ(result.usage.value("completion_tokens", 0), kTokens) << "client " << i;
    EXPECT_EQ(result.text, expected[static_cast<size_t>(i)]) << "client " << i << " prompt " << prompt_for(i);
  }
  const std::string metrics = client->Get("/metrics")->body;
  EXPECT_NE(metrics.find("moenav_expert_reads_total"), std::string::npos);
}

TEST(ServerConcurrency, AggregateThroughput) {
  ServerProcess server;
  ASSERT_TRUE(server.ok()) << server.log();
  run_clients(server, 2);  // warm-up: first-touch of weights and caches
  for (int clients : {1, 8, 32}) {
    const Round round = run_clients(server, clients);
    int64_t tokens = 0;
    for (const StreamResult& result : round.results) {
      EXPECT_TRUE(result.done);
      tokens += result.usage.value("completion_tokens", 0);
    }
    const Json line = {{"bench", "server_throughput"}, {"model", "tiny-mixtral"}, {"clients", clients},
                       {"tokens_per_client", kTokens}, {"tokens", tokens}, {"seconds", round.seconds},
                       {"tokens_per_second", static_cast<double>(tokens) / round.seconds}};
    std::printf("%s\n", line.dump().c_str());
  }
  const std::string metrics = server.client()->Get("/metrics")->body;
  for (const char* name : {"moenav_engine_steps_total", "moenav_engine_step_rows_total", "moenav_expert_reads_total",
                           "moenav_expert_routed_total"}) {
    const size_t at = metrics.find(std::string("\n") + name + " ");
    if (at != std::string::npos) std::printf("%s\n", metrics.substr(at + 1, metrics.find('\n', at + 1) - at - 1).c_str());
  }
}

}  // namespace
}  // namespace moenav::testing
