#include "scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "model/model_config.h"
#include "metrics.h"
#include "text_stream.h"
#include "tokenizer/tokenizer.h"

namespace moenav::server {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point begin, Clock::time_point end) {
  return std::chrono::duration<double>(end - begin).count();
}

// Log-softmax of the raw logits (OpenAI reports the model's distribution, not the sampler's).
TokenLogprob token_logprob(std::span<const float> logits, int32_t token, int top) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double total = 0.0;
  for (float logit : logits) total += std::exp(static_cast<double>(logit - max_logit));
  const float log_total = max_logit + static_cast<float>(std::log(total));
  TokenLogprob result{token, logits[static_cast<size_t>(token)] - log_total, {}};
  if (top > 0) {
    std::vector<int32_t> ids(logits.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
    const size_t count = std::min(ids.size(), static_cast<size_t>(top));
    std::partial_sort(ids.begin(), ids.begin() + static_cast<long>(count), ids.end(),
                      [&](int32_t a, int32_t b) {
                        const float la = logits[static_cast<size_t>(a)];
                        const float lb = logits[static_cast<size_t>(b)];
                        return la > lb || (la == lb && a < b);
                      });
    for (size_t i = 0; i < count; ++i) {
      result.top.emplace_back(ids[i], logits[static_cast<size_t>(ids[i])] - log_total);
    }
  }
  return result;
}

}  // namespace

// ---- Sequence: the hand-over point between one HTTP handler and the engine thread ----------

bool Sequence::wait(SequenceUpdate* update, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!changed_.wait_for(lock, timeout, [&] { return has_news_; })) return false;
  update->text += pending_.text;
  for (TokenLogprob& entry : pending_.logprobs) update->logprobs.push_back(std::move(entry));
  pending_.text.clear();
  pending_.logprobs.clear();
  update->finished = pending_.finished;
  update->finish_reason = pending_.finish_reason;
  update->error = pending_.error;
  update->prompt_tokens = pending_.prompt_tokens;
  update->completion_tokens = pending_.completion_tokens;
  has_news_ = false;
  return true;
}

void Sequence::publish(const std::string& text, const TokenLogprob* logprob) {
  {
    std::lock_guard lock(mutex_);
    pending_.text += text;
    if (logprob) pending_.logprobs.push_back(*logprob);
    pending_.completion_tokens += 1;
    has_news_ = true;
  }
  changed_.notify_all();
}

void Sequence::finish(const std::string& reason, const std::string& error,
                      const std::string& last_text) {
  {
    std::lock_guard lock(mutex_);
    pending_.text += last_text;
    pending_.finished = true;
    pending_.finish_reason = reason;
    pending_.error = error;
    has_news_ = true;
  }
  changed_.notify_all();
}

// ---- Scheduler ------------------------------------------------------------------------------

struct Scheduler::Active {
  Active(std::shared_ptr<Sequence> handle_, std::unique_ptr<Session> session_,
         const SamplingParams& sampling, std::vector<std::string> stop, Clock::time_point submitted_)
      : handle(std::move(handle_)), session(std::move(session_)), sampler(sampling),
        text(std::move(stop)), submitted(submitted_) {}

  std::shared_ptr<Sequence> handle;
  GenerationParams params;
  std::unique_ptr<Session> session;
  Sampler sampler;
  TextStream text;
  Clock::time_point submitted;
  Clock::time_point first_token;
  size_t prompt_done = 0;   // prompt tokens already fed
  int32_t next_token = -1;  // sampled last step, fed this step
  int64_t generated = 0;
  bool done = false;

  bool prefilling() const { return prompt_done < params.prompt.size(); }
};

Scheduler::Scheduler(Engine& engine, SchedulerOptions options, Metrics* metrics)
    : engine_(engine), options_(options), metrics_(metrics) {
  // The same end-of-text token generate() stops at, so greedy outputs match `moenav generate`.
  eos_ = engine.model_config().eos_token;
  if (!eos_ && engine.has_tokenizer()) eos_ = engine.tokenizer().eos_id();
  thread_ = std::thread([this] { run(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_arrived_.notify_all();
  thread_.join();
}

std::shared_ptr<Sequence> Scheduler::submit(GenerationParams params) {
  auto handle = std::make_shared<Sequence>();
  handle->pending_.prompt_tokens = static_cast<int64_t>(params.prompt.size());
  {
    std::lock_guard lock(mutex_);
    waiting_.push_back({handle, std::move(params), Clock::now()});
  }
  work_arrived_.notify_all();
  return handle;
}

int64_t Scheduler::in_flight() const {
  std::lock_guard lock(mutex_);
  return active_count_ + static_cast<int64_t>(waiting_.size());
}

void Scheduler::cancel_all() {
  // Active sequences belong to the engine thread, which reads this flag every step.
  cancel_all_.store(true);
  work_arrived_.notify_all();
}

void Scheduler::run() {
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      work_arrived_.wait(lock, [&] { return stopping_ || !waiting_.empty() || !active_.empty(); });
      if (stopping_) break;
    }
    admit();
    drop_cancelled();
    if (!active_.empty()) step();
    remove_finished();
    if (metrics_) metrics_->set_sequences(static_cast<int64_t>(active_.size()), in_flight());
  }
  // Shutting down: whoever still waits is told so rather than left hanging.
  std::lock_guard lock(mutex_);
  for (Waiting& waiting : waiting_) waiting.handle->finish("cancelled", {}, {});
  for (auto& active : active_) active->handle->finish("cancelled", {}, {});
}

void Scheduler::admit() {
  std::lock_guard lock(mutex_);
  while (!waiting_.empty() && static_cast<int>(active_.size()) < options_.max_sequences) {
    Waiting next = std::move(waiting_.front());
    waiting_.pop_front();
    auto active = std::make_unique<Active>(next.handle, engine_.new_session(), next.params.sampling,
                                           next.params.stop, next.submitted);
    active->params = std::move(next.params);
    active_.push_back(std::move(active));
  }
  active_count_ = static_cast<int64_t>(active_.size());
}

void Scheduler::drop_cancelled() {
  for (auto& active : active_) {
    // use_count 1: the handler let go of its Sequence without cancelling (it cannot be told).
    if (cancel_all_.load() || active->handle->cancelled() || active->handle.use_count() == 1) {
      finish(*active, "cancelled");
    }
  }
  remove_finished();
}

void Scheduler::remove_finished() {
  std::erase_if(active_, [](const auto& active) { return active->done; });
  std::lock_guard lock(mutex_);
  active_count_ = static_cast<int64_t>(active_.size());
}

void Scheduler::step() {
  // One forward over every sequence: decode rows first, then prompt chunks within the budget.
  std::vector<ForwardRequest> requests;
  std::vector<Active*> owners;
  int64_t budget = options_.ubatch;
  for (auto& active : active_) {
    if (active->prefilling()) continue;
    requests.push_back({active->session.get(), std::span<const int32_t>(&active->next_token, 1), false});
    owners.push_back(active.get());
    --budget;
  }
  for (auto& active : active_) {
    if (!active->prefilling() || budget <= 0) continue;
    const auto& prompt = active->params.prompt;
    const size_t count = std::min(prompt.size() - active->prompt_done, static_cast<size_t>(budget));
    requests.push_back({active->session.get(),
                        std::span<const int32_t>(prompt).subspan(active->prompt_done, count), false});
    owners.push_back(active.get());
    active->prompt_done += count;
    budget -= static_cast<int64_t>(count);
  }
  std::vector<std::vector<float>> logits;
  const auto start = Clock::now();
  const Status status = engine_.forward(requests, &logits);
  if (metrics_) {
    int64_t rows = 0;
    for (const ForwardRequest& request : requests) rows += static_cast<int64_t>(request.tokens.size());
    metrics_->observe_step(rows, seconds_between(start, Clock::now()));
  }
  for (size_t i = 0; i < owners.size(); ++i) {
    if (!status.ok()) {
      finish(*owners[i], "error", status.message());
    } else if (!owners[i]->prefilling()) {
      after_forward(*owners[i], logits[i]);
    }
  }
  remove_finished();
}

// The same decisions, in the same order, as generate(): sample, stop at EOS, emit, stop at the
// token limit or the end of the context, else feed the token next step.
void Scheduler::after_forward(Active& active, std::span<const float> logits) {
  const int32_t token = active.sampler.sample(logits);
  if (active.generated == 0) {
    active.first_token = Clock::now();
    if (metrics_) metrics_->observe_ttft(seconds_between(active.submitted, active.first_token));
  }
  if (active.params.stop_at_eos && eos_ && token == *eos_) return finish(active, "stop");
  ++active.generated;
  const std::string text = active.text.push(engine_.tokenizer().decode_token(token));
  if (active.params.top_logprobs >= 0) {
    const TokenLogprob logprob = token_logprob(logits, token, active.params.top_logprobs);
    active.handle->publish(text, &logprob);
  } else {
    active.handle->publish(text, nullptr);
  }
  if (active.text.stopped()) return finish(active, "stop");
  if (active.generated >= active.params.max_tokens) return finish(active, "length");
  if (active.session->position() + 1 > active.session->context()) return finish(active, "length");
  active.next_token = token;
}

void Scheduler::finish(Active& active, const std::string& reason, const std::string& error) {
  if (active.done) return;
  active.done = true;
  {
    // Counted out before the client hears of the end, so in_flight() never lags behind it.
    std::lock_guard lock(mutex_);
    --active_count_;
  }
  // Held-back text is shown once no stop string can complete any more.
  const bool normal_end = reason == "stop" || reason == "length";
  active.handle->finish(reason, error, normal_end ? active.text.flush() : std::string());
  if (metrics_) {
    const double total = seconds_between(active.submitted, Clock::now());
    const double tpot = active.generated > 1
                            ? seconds_between(active.first_token, Clock::now()) /
                                  static_cast<double>(active.generated - 1)
                            : -1.0;
    metrics_->observe_sequence(static_cast<int64_t>(active.prompt_done), active.generated, reason,
                               total, tpot);
  }
  active.session.reset();  // frees the KV cache now, not when the handler lets go
}

}  // namespace moenav::server
