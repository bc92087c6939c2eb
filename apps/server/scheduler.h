// Continuous batching. One engine thread owns the Engine and runs steps; each step is ONE
// Engine::forward over every active sequence: a decode token for each sequence that is
// generating, plus chunks of newly admitted prompts up to the batch.ubatch token budget (chunked
// prefill, so a long prompt never stalls the others for more than one step). MoE layers group the
// step's rows by expert, so each expert's weights are read once per step however many clients
// there are. Attention is per sequence and every kernel computes a row the same way whatever the
// batch, so a sequence's output does not depend on who it was batched with.
//
// HTTP handler threads talk to the engine thread only through a Sequence: the request goes in
// through submit(), text deltas and the end come out through Sequence::wait(), and a handler whose
// client went away calls cancel().
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "moenav/engine.h"
#include "runtime/sampler.h"

namespace moenav::server {

class Metrics;

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;                      // log-softmax of the model's logits
  std::vector<std::pair<int32_t, float>> top;  // the most likely alternatives, best first
};

struct GenerationParams {
  std::vector<int32_t> prompt;  // at least one token; prompt + max_tokens fits the context
  int64_t max_tokens = 16;
  SamplingParams sampling;
  std::vector<std::string> stop;  // generation ends before the first occurrence of any
  int top_logprobs = -1;          // -1: no logprobs; else alternatives per token (0..20)
  bool stop_at_eos = true;        // false: "ignore_eos" (benchmarks want fixed lengths)
};

// What the engine thread has produced for a sequence since the last wait().
struct SequenceUpdate {
  std::string text;                    // new visible text (valid UTF-8, stop text excluded)
  std::vector<TokenLogprob> logprobs;  // for the tokens generated since the last update
  bool finished = false;
  std::string finish_reason;  // "stop", "length", "cancelled", "error" once finished
  std::string error;          // when finish_reason == "error"
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

class Sequence {
 public:
  // Asks the engine thread to drop this sequence at its next step (client disconnected).
  void cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }
  // Moves what is new into *update (appending text and logprobs). Returns false when nothing
  // arrived within `timeout`.
  bool wait(SequenceUpdate* update, std::chrono::milliseconds timeout);

 private:
  friend class Scheduler;
  void publish(const std::string& text, const TokenLogprob* logprob);
  void finish(const std::string& reason, const std::string& error, const std::string& last_text);

  std::atomic<bool> cancelled_{false};
  std::mutex mutex_;
  std::condition_variable changed_;
  SequenceUpdate pending_;
  bool has_news_ = false;
};

struct SchedulerOptions {
  int max_sequences = 32;  // sequences decoded together; the rest wait in arrival order
  int64_t ubatch = 512;    // tokens per step spent on prompts (chunked prefill)
};

class Scheduler {
 public:
  Scheduler(Engine& engine, SchedulerOptions options, Metrics* metrics);
  ~Scheduler();  // cancels what is left and joins the engine thread

  // Queues a request; the engine thread admits it when a slot is free.
  std::shared_ptr<Sequence> submit(GenerationParams params);
  // Sequences admitted or waiting.
  int64_t in_flight() const;
  // Finishes every sequence, now and later, as cancelled (shutdown after the drain timeout).
  void cancel_all();

 private:
  struct Active;
  struct Waiting {
    std::shared_ptr<Sequence> handle;
    GenerationParams params;
    std::chrono::steady_clock::time_point submitted;
  };

  void run();
  void admit();
  void drop_cancelled();
  void remove_finished();  // and publishes the count for in_flight()
  void step();
  void after_forward(Active& active, std::span<const float> logits);
  void finish(Active& active, const std::string& reason, const std::string& error = {});

  Engine& engine_;
  SchedulerOptions options_;
  Metrics* metrics_;
  std::optional<int32_t> eos_;

  mutable std::mutex mutex_;  // guards waiting_, active_count_, stopping_
  std::condition_variable work_arrived_;
  std::deque<Waiting> waiting_;
  int64_t active_count_ = 0;
  bool stopping_ = false;
  std::atomic<bool> cancel_all_{false};

  std::vector<std::unique_ptr<Active>> active_;  // engine thread only
  std::thread thread_;
};

}  // namespace moenav::server
