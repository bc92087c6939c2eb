// The engine: a loaded model, its tokenizer and an EngineConfig, ready to run forward passes for
// any number of sequences (Sessions). Everything the CLI, the server and the tuner do goes through
// this API.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "moenav/engine_config.h"
#include "moenav/expert_counters.h"
#include "moenav/status.h"

namespace moenav {

struct Model;
struct ModelConfig;
struct Routing;
class Tokenizer;
class ThreadPool;
class KvCache;
class ExpertStore;
class RoutingPolicy;
struct StageTimes;
struct DeviceKvCache;

// One sequence: its tokens so far and its KV cache. It must not outlive its Engine (on CUDA the
// cache is device memory of the engine's context).
class Session {
 public:
  ~Session();
  int64_t position() const { return static_cast<int64_t>(tokens_.size()); }
  int64_t context() const;
  const std::vector<int32_t>& tokens() const { return tokens_; }
  void reset() { tokens_.clear(); }

 private:
  friend class Engine;
  Session(std::unique_ptr<KvCache> cache);
  std::unique_ptr<KvCache> cache_;
  // The keys and values on the GPU (device.backend cuda), created by the first forward pass.
  std::unique_ptr<DeviceKvCache, void (*)(DeviceKvCache*)> device_cache_{nullptr, nullptr};
  std::vector<int32_t> tokens_;
};

struct ForwardRequest {
  Session* session = nullptr;
  std::span<const int32_t> tokens;  // appended to the session
  bool all_logits = false;          // logits for every token, else only for the last
};

class Engine {
 public:
  static Expected<std::unique_ptr<Engine>> create(const std::string& model_path,
                                                  const EngineConfig& config);
  ~Engine();

  const Model& model() const { return *model_; }
  const ModelConfig& model_config() const;
  // The tokenizer; require_tokenizer() says why there is none (golden checkpoints carry none).
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  Status require_tokenizer() const;
  const EngineConfig& config() const { return config_; }
  int64_t context_length() const { return context_; }
  int64_t vocab_size() const;  // logits per token
  ThreadPool& pool() { return *pool_; }

  std::unique_ptr<Session> new_session() const;

  // One forward pass over the tokens of several sequences together. logits->at(i) receives
  // [n_tokens_i or 1, vocab] floats for request i. Errors: context overflow, bad token ids.
  Status forward(std::span<const ForwardRequest> requests, std::vector<std::vector<float>>* logits);

  // Feeds `tokens` to one session in chunks of batch.ubatch; returns the logits of the last
  // token, or of every token when all_logits.
  Expected<std::vector<float>> evaluate(Session& session, std::span<const int32_t> tokens,
                                        bool all_logits = false);
  // The same, into a caller-owned buffer that keeps its capacity across calls.
  Status evaluate(Session& session, std::span<const int32_t> tokens, bool all_logits,
                  std::vector<float>& logits);

  // Wall time per forward-pass stage since the last reset (core/stage_timer.h).
  const StageTimes& stage_times() const;
  void reset_stage_times();

  // What the expert store did since creation or the last reset: hits and misses per tier, bytes
  // per link, stall time, prefetch accuracy.
  ExpertCounters expert_counters() const;
  void reset_expert_counters();
  // Where experts live (experts/expert_store.h): its memory plan, the routing-trace hook.
  ExpertStore& expert_store();

  // The GPU memory high-water mark of device.backend cuda (weights, caches, scratch); -1 on the
  // CPU backend.
  int64_t gpu_peak_bytes() const;
  // Decode steps device.backend cuda launched as one recorded CUDA graph; -1 on the CPU backend.
  int64_t gpu_graph_launches() const;

  // Called with every MoE layer's routing (traces, statistics).
  void set_routing_observer(std::function<void(int64_t layer, const Routing&)> observer);

 private:
  Engine();
  Status forward_cuda(std::span<const ForwardRequest> requests, std::span<const int32_t> tokens,
                      std::vector<std::vector<float>>* logits);
  struct State;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<State> state_;
  EngineConfig config_;
  int64_t context_ = 0;
};

}  // namespace moenav
