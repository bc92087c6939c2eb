// Why batched serving may promise single-client outputs: a batched Engine::forward gives
// bit-identical logits to single-sequence forwards (attention is per sequence, and every kernel
// computes a row the same way whatever the batch), and the scheduler, which mixes decode rows
// and chunked prompts of many sequences in one forward, reproduces generate() token for token.
//
// The server's sources belong to the moenav executable, not to a library the tests link
// (tests/CMakeLists.txt), so this test compiles the ones it checks itself.
#include "../../apps/server/metrics.cpp"
#include "../../apps/server/scheduler.cpp"
#include "../../apps/server/text_stream.cpp"

#include <cstring>

#include "test_server_harness.h"

namespace moenav::testing {
namespace {

using server::GenerationParams;
using server::Scheduler;
using server::SchedulerOptions;
using server::SequenceUpdate;

std::unique_ptr<Engine> open_tiny(int threads) {
  EngineConfig config;
  config.device.threads = threads;
  auto engine = Engine::create(tiny_model(), config);
  return engine.ok() ? std::move(engine).value() : nullptr;
}

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(ServerBatching, BatchedForwardLogitsAreBitIdentical) {
  auto engine = open_tiny(2);
  ASSERT_TRUE(engine);
  const Tokenizer& tokenizer = engine->tokenizer();
  const std::vector<std::vector<int32_t>> prompts = {tokenizer.encode(" The history of the city"),
                                                     tokenizer.encode(" Once upon a time there was a river"),
                                                     tokenizer.encode(" A")};
  // Reference: each sequence alone, prompt then three decode tokens.
  std::vector<std::vector<std::vector<float>>> alone(prompts.size());
  std::vector<int32_t> next = {17, 42, 99};
  for (size_t s = 0; s < prompts.size(); ++s) {
    auto session = engine->new_session();
    alone[s].push_back(*engine->evaluate(*session, prompts[s]));
    for (int step = 0; step < 3; ++step) {
      alone[s].push_back(*engine->evaluate(*session, std::span<const int32_t>(&next[s], 1)));
    }
  }
  // Batched: all prompts in one forward, then all decode rows in one forward per step.
  std::vector<std::unique_ptr<Session>> sessions;
  std::vector<ForwardRequest> requests;
  for (size_t s = 0; s < prompts.size(); ++s) {
    sessions.push_back(engine->new_session());
    requests.push_back({sessions.back().get(), prompts[s], false});
  }
  std::vector<std::vector<float>> logits;
  ASSERT_TRUE(engine->forward(requests, &logits).ok());
  for (size_t s = 0; s < prompts.size(); ++s) EXPECT_TRUE(bit_identical(logits[s], alone[s][0])) << "prompt " << s;
  for (int step = 0; step < 3; ++step) {
    for (size_t s = 0; s < prompts.size(); ++s) requests[s] = {sessions[s].get(), std::span<const int32_t>(&next[s], 1), false};
    ASSERT_TRUE(engine->forward(requests, &logits).ok());
    for (size_t s = 0; s < prompts.size(); ++s) {
      EXPECT_TRUE(bit_identical(logits[s], alone[s][static_cast<size_t>(step + 1)])) << "sequence " << s << " step " << step;
    }
  }
  // Mixed: a decode row of one sequence next to the prompt of a new one.
  auto fresh = engine->new_session();
  std::vector<ForwardRequest> mixed = {{sessions[0].get(), std::span<const int32_t>(&next[0], 1), false},
                                       {fresh.get(), prompts[1], false}};
  ASSERT_TRUE(engine->forward(mixed, &logits).ok());
  EXPECT_TRUE(bit_identical(logits[1], alone[1][0]));
}

std::string run_to_end(Scheduler& scheduler, GenerationParams params, SequenceUpdate* update) {
  auto sequence = scheduler.submit(std::move(params));
  for (int i = 0; i < 6000 && !update->finished; ++i) sequence->wait(update, std::chrono::milliseconds(10));
  return update->text;
}

TEST(ServerBatching, SchedulerMatchesGenerateUnderChunkedPrefill) {
  GreedyReference reference;
  ASSERT_TRUE(reference.ok());
  auto engine = open_tiny(2);
  ASSERT_TRUE(engine);
  // ubatch 5: prompts are fed in chunks of 5 next to other sequences' decode rows.
  Scheduler scheduler(*engine, SchedulerOptions{4, 5}, nullptr);
  std::vector<std::string> prompts;
  for (int i = 0; i < 8; ++i) prompts.push_back(" The story number " + std::to_string(i) + " begins when the old river");
  std::vector<std::shared_ptr<server::Sequence>> sequences;
  for (const std::string& prompt : prompts) {
    GenerationParams params;
    params.prompt = engine->tokenizer().encode(prompt);
    params.max_tokens = 24;
    params.stop_at_eos = false;
    sequences.push_back(scheduler.submit(std::move(params)));
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    SequenceUpdate update;
    for (int wait = 0; wait < 6000 && !update.finished; ++wait) sequences[i]->wait(&update, std::chrono::milliseconds(10));
    EXPECT_EQ(update.finish_reason, "length");
    EXPECT_EQ(update.completion_tokens, 24);
    EXPECT_EQ(update.text, reference.text(prompts[i], 24, false)) << prompts[i];
  }
}

TEST(ServerBatching, StopStringsAndCancellation) {
  GreedyReference reference;
  ASSERT_TRUE(reference.ok());
  auto engine = open_tiny(2);
  ASSERT_TRUE(engine);
  Scheduler scheduler(*engine, SchedulerOptions{4, 64}, nullptr);
  const std::string prompt = " The history of the city";
  const std::string full = reference.text(prompt, 20, false);
  GenerationParams params;
  params.prompt = engine->tokenizer().encode(prompt);
  params.max_tokens = 20;
  params.stop_at_eos = false;
  params.stop = {full.substr(5, 3)};
  SequenceUpdate update;
  EXPECT_EQ(run_to_end(scheduler, params, &update), full.substr(0, full.find(full.substr(5, 3))));
  EXPECT_EQ(update.finish_reason, "stop");
  // A cancelled sequence ends as cancelled and frees its slot for the next one.
  params.stop.clear();
  params.max_tokens = 1500;
  auto cancelled = scheduler.submit(params);
  cancelled->cancel();
  SequenceUpdate cancelled_update;
  for (int i = 0; i < 500 && !cancelled_update.finished; ++i) cancelled->wait(&cancelled_update, std::chrono::milliseconds(10));
  EXPECT_EQ(cancelled_update.finish_reason, "cancelled");
  EXPECT_EQ(scheduler.in_flight(), 0);
}

TEST(ServerBatching, TextStreamHoldsBackStopPrefixesAndPartialCharacters) {
  server::TextStream stream({"STOP", ""});
  EXPECT_EQ(stream.push("hello S"), "hello ");  // "S" may start "STOP"
  EXPECT_EQ(stream.push("T"), "");
  EXPECT_EQ(stream.push("ar"), "STar");         // it did not
  EXPECT_EQ(stream.push("\xc3"), "");           // half of "é"
  EXPECT_EQ(stream.push("\xa9 ST"), "\xc3\xa9 ");
  EXPECT_EQ(stream.push("OP and more"), "");
  EXPECT_TRUE(stream.stopped());
  EXPECT_EQ(stream.flush(), "");
  server::TextStream plain({});
  EXPECT_EQ(plain.push("abc"), "abc");
  EXPECT_EQ(plain.push("\xe2\x82"), "");
  EXPECT_EQ(plain.flush(), "\xe2\x82");
}

}  // namespace
}  // namespace moenav::testing
