// Engine: load, validate, and run batched forward passes. The decoder is written once here over
// ModelConfig's feature flags; the layers it calls live in src/layers.
#include "moenav/engine.h"

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "core/stage_timer.h"
#include "core/thread_pool.h"
#include "experts/expert_store.h"
#include "experts/store_factory.h"
#include "layers/attention.h"
#include "layers/attention_mla.h"
#include "layers/ffn.h"
#include "layers/kv_cache.h"
#include "layers/moe/moe_layer.h"
#include "layers/norm.h"
#include "layers/rope.h"
#include "backend/cpu/matmul.h"
#include "model/host_weights.h"
#include "model/model.h"
#include "model/weight_conversion.h"
#include "quant/quant.h"
#include "runtime/cuda_decoder.h"
#include "tokenizer/tokenizer.h"

namespace moenav {

struct Engine::State {
  Rope rope;
  RoutingPolicy policy;
  std::unique_ptr<ExpertStore> store;
  RoutingObserver observer;
  Workspace work;
  std::vector<BatchRow> rows;
  StageTimes stage_times{};
  std::vector<std::vector<float>> chunk_logits{};  // evaluate()'s per-chunk output
  std::unique_ptr<CudaDecoder> cuda{};  // device.backend cuda: the decoder on the GPU
};

Session::Session(std::unique_ptr<KvCache> cache) : cache_(std::move(cache)) {}
Session::~Session() = default;
int64_t Session::context() const { return cache_->context(); }

Engine::Engine() = default;
Engine::~Engine() = default;

const ModelConfig& Engine::model_config() const { return model_->config; }
int64_t Engine::vocab_size() const { return model_->config.vocab; }

namespace {

// A model without tokenizer files still runs on token ids (logits, perplexity of ids).
Expected<std::unique_ptr<Tokenizer>> load_tokenizer(const Model& model) {
  const bool present = model.gguf ? model.gguf->has("tokenizer.ggml.model")
                                  : std::filesystem::exists(model.path + "/tokenizer.json");
  if (!present) return std::unique_ptr<Tokenizer>();
  auto tokenizer = model.gguf ? Tokenizer::from_gguf(*model.gguf)
                              : Tokenizer::from_hf_directory(model.path);
  if (!tokenizer.ok()) return tokenizer.status();
  if (tokenizer->vocab_size() > model.config.vocab) {
    return Status::errorf("{}: tokenizer has {} tokens but the model's vocabulary is {}",
                          model.path, tokenizer->vocab_size(), model.config.vocab);
  }
  return std::make_unique<Tokenizer>(std::move(tokenizer).value());
}

// What weights.load "copy" copies: what the CPU computes from, unless the disk tier reads it.
HostCopy host_copy(const EngineConfig& config, const MemoryPlan& plan) {
  if (config.weights.load != "copy") return HostCopy::None;
  if (config.device.backend == "cuda") {  // the experts a device cache copies in and the CPU may compute
    return config.placement.expert_cache.size != "all" ? HostCopy::Experts : HostCopy::None;
  }
  return plan.cached ? HostCopy::NonExperts : HostCopy::All;
}

}  // namespace

Expected<std::unique_ptr<Engine>> Engine::create(const std::string& model_path,
                                                 const EngineConfig& config) {
  std::unique_ptr<Engine> engine(new Engine());
  engine->config_ = config;
  MOENAV_ASSIGN_OR_RETURN(engine->model_, load_model(model_path));
  MOENAV_RETURN_IF_ERROR(convert_weights(*engine->model_, config.weights));
  MOENAV_ASSIGN_OR_RETURN(engine->tokenizer_, load_tokenizer(*engine->model_));
  const ModelConfig& model = engine->model_->config;
  if (config.kv_cache.context > model.context_length) {
    return Status::errorf("kv_cache.context = {} exceeds the model's context length {}",
                          config.kv_cache.context, model.context_length);
  }
  engine->context_ = config.kv_cache.context > 0 ? config.kv_cache.context : model.context_length;
  if (config.kv_cache.type == "f16") {
    if (model.attention == AttentionKind::Mla) {
      return Status::error("kv_cache.type = f16: MLA attention (DeepSeek) caches f32 latents only");
    }
  }
  engine->pool_ = std::make_unique<ThreadPool>(config.device.threads);
  MOENAV_ASSIGN_OR_RETURN(RoutingPolicy policy, RoutingPolicy::create(config.routing, model,
                                                                      &engine->model_->weights,
                                                                      engine->pool_.get()));
  // On CUDA the decoder keeps its own device expert cache; the host store (all resident, over
  // the model's weights) only answers expert_store() there.
  EngineConfig store_config = config;
  if (config.device.backend == "cuda") {
    store_config.device.backend = "cpu";
    store_config.placement.expert_cache.size = "all";
    store_config.placement.rules.clear();
    store_config.placement.expert_cache.warm_start.clear();
    store_config.prefetch.policy = "none";
  }
  MOENAV_ASSIGN_OR_RETURN(std::unique_ptr<ExpertStore> store,
                          create_expert_store(*engine->model_, store_config, engine->context_,
                                              engine->pool_->size()));
  MOENAV_RETURN_IF_ERROR(copy_weights_to_host_memory(*engine->model_, host_copy(config, store->memory_plan()),
                                                     *engine->pool_)
                             .status());
  engine->state_.reset(new State{Rope(model),
                                 std::move(policy),
                                 std::move(store),
                                 {}, {}, {}});
  if (config.device.backend == "cuda") {
    MOENAV_ASSIGN_OR_RETURN(engine->state_->cuda, CudaDecoder::create(*engine->model_, config, *engine->pool_));
  }
  return engine;
}

Status Engine::require_tokenizer() const {
  if (tokenizer_) return ok_status();
  return Status::errorf("{}: no tokenizer ({}); text input needs one", model_->path,
                        model_->gguf ? "no tokenizer.ggml.model metadata" : "tokenizer.json is missing");
}

const StageTimes& Engine::stage_times() const { return state_->stage_times; }
void Engine::reset_stage_times() { state_->stage_times.reset(); }

std::unique_ptr<Session> Engine::new_session() const {
  const ModelConfig& c = model_->config;
  auto cache = c.attention == AttentionKind::Mla
                   ? std::make_unique<KvCache>(c.n_layers, KvCache::Rows{c.kv_cache_width(), 0}, context_)
                   : std::make_unique<KvCache>(
                         c.n_layers,
                         KvCache::Gqa{c.n_kv_heads, c.head_dim,
                                      config_.kv_cache.type == "f16" ? DType::F16 : DType::F32},
                         context_);
  return std::unique_ptr<Session>(new Session(std::move(cache)));
}

ExpertCounters Engine::expert_counters() const {
  if (state_->cuda && state_->cuda->caches_experts()) return state_->cuda->expert_counters();
  return state_->store->counters();
}

void Engine::reset_expert_counters() {
  if (state_->cuda) state_->cuda->reset_expert_counters();
  state_->store->reset_counters();
}
ExpertStore& Engine::expert_store() { return *state_->store; }
int64_t Engine::gpu_peak_bytes() const { return state_->cuda ? state_->cuda->peak_bytes() : -1; }
int64_t Engine::gpu_graph_launches() const { return state_->cuda ? state_->cuda->graph_launches() : -1; }

void Engine::set_routing_observer(std::function<void(int64_t, const Routing&)> observer) {
  state_->observer = std::move(observer);
}

namespace {

void resize_workspace(Workspace& work, const ModelConfig& c, int64_t n_rows, int64_t max_k,
                      int64_t threads, int64_t context) {
  auto fit = [](std::vector<float>& buffer, int64_t size) {
    if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(static_cast<size_t>(size));
  };
  const int64_t ffn = std::max({c.expert_ffn, c.dense_ffn, c.shared_expert_ffn});
  fit(work.hidden, n_rows * c.hidden);
  fit(work.normed, n_rows * c.hidden);
  fit(work.q, n_rows * c.q_dim());
  fit(work.k, n_rows * c.kv_dim());
  fit(work.v, n_rows * c.kv_dim());
  fit(work.attention, n_rows * std::max(c.q_dim(), c.n_heads * c.v_head_dim));
  fit(work.shared_output, n_rows * c.hidden);
  if (c.attention == AttentionKind::Mla) {
    const int64_t latent = n_rows * c.n_heads * c.kv_lora_rank;
    fit(work.mla_q_a, n_rows * c.q_lora_rank);
    fit(work.mla_kv, n_rows * c.kv_cache_width());
    fit(work.mla_q_latent, latent);
    fit(work.mla_o_latent, latent);
    fit(work.mla_head_in, n_rows * std::max(c.qk_nope_dim, c.kv_lora_rank));
    fit(work.mla_head_out, n_rows * std::max(c.kv_lora_rank, c.v_head_dim));
  }
  fit(work.projected, n_rows * c.hidden);
  fit(work.block_output, n_rows * c.hidden);
  fit(work.scores, threads * context);
  fit(work.router_logits, n_rows * std::max<int64_t>(c.n_experts, 1));
  fit(work.expert_input, n_rows * c.hidden);
  fit(work.ffn_gate, n_rows * ffn);
  fit(work.ffn_up, n_rows * ffn);
  fit(work.expert_output, n_rows * std::max<int64_t>(max_k, 1) * c.hidden);
}

}  // namespace

Status Engine::forward(std::span<const ForwardRequest> requests,
                       std::vector<std::vector<float>>* logits) {
  const ModelConfig& c = model_->config;
  const ModelWeights& w = model_->weights;
  State& s = *state_;
  // Rows of the batch, validated before anything is written to a cache.
  s.rows.clear();
  std::vector<int32_t> tokens;
  int64_t max_context = 0;
  for (const ForwardRequest& request : requests) {
    Session& session = *request.session;
    const int64_t end = session.position() + static_cast<int64_t>(request.tokens.size());
    if (end > session.context()) {
      return Status::errorf("context overflow: {} tokens exceed the context length {}", end,
                            session.context());
    }
    for (int32_t token : request.tokens) {
      if (token < 0 || token >= c.vocab) {
        return Status::errorf("token id {} is outside the vocabulary [0, {})", token, c.vocab);
      }
    }
    if (!s.cuda) session.cache_->reserve(end);
    max_context = std::max(max_context, session.context());
    for (size_t i = 0; i < request.tokens.size(); ++i) {
      s.rows.push_back({session.cache_.get(), session.position() + static_cast<int64_t>(i)});
      tokens.push_back(request.tokens[i]);
    }
  }
  const int64_t n_rows = static_cast<int64_t>(tokens.size());
  if (n_rows == 0) return ok_status();
  if (s.cuda) return forward_cuda(requests, tokens, logits);
  int64_t max_k = 0;
  for (int64_t l = 0; l < c.n_layers; ++l) max_k = std::max(max_k, s.policy.k_for_layer(l));
  resize_workspace(s.work, c, n_rows, max_k, pool_->size(), max_context);
  Workspace& work = s.work;

  StageClock clock(&s.stage_times);
  float* hidden = work.hidden.data();  // [T, hidden] residual stream
  for (int64_t r = 0; r < n_rows; ++r) {
    quant::dequantize_row(w.token_embedding.dtype, w.token_embedding.row(tokens[static_cast<size_t>(r)]),
                          hidden + r * c.hidden, c.hidden);
  }
  clock.lap(Stage::Embedding);
  const MoeContext moe{&s.policy, s.store.get(), &s.observer};
  float* normed = work.normed.data();   // [T, hidden]
  float* block_output = work.block_output.data();  // [T, hidden] a block's residual update
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& layer = w.layers[static_cast<size_t>(l)];
    rms_norm(hidden, static_cast<const float*>(layer.attn_norm.data), normed, n_rows, c.hidden, c.norm_eps);
    clock.lap(Stage::Norm);
    if (c.attention == AttentionKind::Mla) {
      mla_attention_forward(c, layer, l, s.rope, s.rows, work, normed, block_output, *pool_);
    } else {
      attention_forward(c, layer, l, s.rope, s.rows, work, normed, block_output, *pool_);
    }
    clock.lap(Stage::Attention);
    for (int64_t i = 0; i < n_rows * c.hidden; ++i) hidden[i] += block_output[i];
    rms_norm(hidden, static_cast<const float*>(layer.ffn_norm.data), normed, n_rows, c.hidden, c.norm_eps);
    clock.lap(Stage::Norm);
    if (c.is_moe_layer(l)) {
      moe_forward(c, layer, l, moe, normed, n_rows, block_output, work, *pool_);
      clock.lap(Stage::Moe);
    } else {
      ffn_forward(layer.dense, normed, n_rows, block_output, work, *pool_);
      clock.lap(Stage::DenseFfn);
    }
    for (int64_t i = 0; i < n_rows * c.hidden; ++i) hidden[i] += block_output[i];
    clock.lap(Stage::Residual);
  }

  // Final norm and LM head, only for the rows whose logits were asked for.
  logits->resize(requests.size());
  int64_t row = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const ForwardRequest& request = requests[i];
    const int64_t count = static_cast<int64_t>(request.tokens.size());
    const int64_t first = request.all_logits ? row : row + count - 1;
    const int64_t n_out = request.all_logits ? count : 1;
    rms_norm(hidden + first * c.hidden, static_cast<const float*>(w.output_norm.data), normed,
             n_out, c.hidden, c.norm_eps);
    std::vector<float>& out = (*logits)[i];
    out.resize(static_cast<size_t>(n_out * c.vocab));
    cpu::matmul(w.output, normed, n_out, out.data(), *pool_);
    request.session->tokens_.insert(request.session->tokens_.end(), request.tokens.begin(),
                                    request.tokens.end());
    row += count;
  }
  clock.lap(Stage::LmHead);
  return ok_status();
}

Status Engine::forward_cuda(std::span<const ForwardRequest> requests,
                            std::span<const int32_t> tokens,
                            std::vector<std::vector<float>>* logits) {
  State& s = *state_;
  logits->resize(requests.size());
  std::vector<CudaDecoder::Segment> segments;
  for (size_t i = 0; i < requests.size(); ++i) {
    const ForwardRequest& request = requests[i];
    if (request.tokens.empty()) continue;
    Session& session = *request.session;
    segments.push_back({&session.device_cache_, session.context(), session.position(),
                        static_cast<int64_t>(request.tokens.size()), request.all_logits,
                        &(*logits)[i]});
  }
  MOENAV_RETURN_IF_ERROR(s.cuda->forward(segments, tokens, s.policy, s.observer));
  for (const ForwardRequest& request : requests) {
    request.session->tokens_.insert(request.session->tokens_.end(), request.tokens.begin(),
                                    request.tokens.end());
  }
  return ok_status();
}

Status Engine::evaluate(Session& session, std::span<const int32_t> tokens, bool all_logits,
                        std::vector<float>& logits) {
  // Buffers keep their capacity across calls: a perplexity run evaluates thousands of windows
  // and would otherwise page-fault fresh megabytes of logits for each.
  logits.clear();
  std::vector<std::vector<float>>& chunk_logits = state_->chunk_logits;
  const size_t chunk = static_cast<size_t>(std::max(config_.batch.ubatch, 1));
  for (size_t begin = 0; begin < tokens.size(); begin += chunk) {
    const size_t count = std::min(chunk, tokens.size() - begin);
    ForwardRequest request{&session, tokens.subspan(begin, count), all_logits};
    MOENAV_RETURN_IF_ERROR(forward(std::span<const ForwardRequest>(&request, 1), &chunk_logits));
    if (all_logits || begin + count == tokens.size()) {
      logits.insert(logits.end(), chunk_logits[0].begin(), chunk_logits[0].end());
    }
  }
  return ok_status();
}

Expected<std::vector<float>> Engine::evaluate(Session& session, std::span<const int32_t> tokens,
                                              bool all_logits) {
  std::vector<float> logits;
  MOENAV_RETURN_IF_ERROR(evaluate(session, tokens, all_logits, logits));
  return logits;
}

}  // namespace moenav
