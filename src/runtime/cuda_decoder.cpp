#include "runtime/cuda_decoder.h"

#include <algorithm>
#include <numeric>

#include <fmt/format.h>

#include "backend/cuda.h"
#include "backend/cuda_ops.h"
#include "core/byte_size.h"
#include "experts/store_factory.h"
#include "layers/batch.h"
#include "layers/ffn.h"
#include "layers/moe/routing_policy.h"
#include "layers/rope.h"
#include "model/model.h"
#include "quant/quant.h"
#include "runtime/cuda_decoder_state.h"
#include "runtime/device_expert_cache.h"

namespace moenav {
namespace {

void destroy(DeviceKvCache* cache) { delete cache; }

class Uploader {
 public:
  Uploader(cuda::Context& context, std::vector<DeviceBuffer>& storage)
      : context_(context), storage_(storage) {}

  Expected<DeviceWeight> weight(const TensorView& tensor, const std::string& name) {
    if (tensor.empty()) return DeviceWeight{};
    if (!cuda::matmul_supported(tensor.dtype)) {
      return Status::errorf("{} is {}, which the CUDA backend cannot multiply yet (convert it with "
                            "--weights-type, e.g. q8_0 or q4_k)", name, dtype_name(tensor.dtype));
    }
    MOENAV_ASSIGN_OR_RETURN(void* data, bytes(tensor, name));
    return DeviceWeight{tensor.dtype, tensor.rows(), tensor.cols(), data};
  }

  Expected<const float*> vector(const TensorView& tensor, const std::string& name) {
    if (tensor.empty()) return static_cast<const float*>(nullptr);
    MOENAV_ASSIGN_OR_RETURN(void* data, bytes(tensor, name));
    return static_cast<const float*>(data);
  }

  Expected<DeviceFfn> ffn(const FfnWeights& ffn, const std::string& name) {
    DeviceFfn out;
    MOENAV_ASSIGN_OR_RETURN(out.gate, weight(ffn.gate, name + ".gate"));
    MOENAV_ASSIGN_OR_RETURN(out.up, weight(ffn.up, name + ".up"));
    MOENAV_ASSIGN_OR_RETURN(out.down, weight(ffn.down, name + ".down"));
    MOENAV_RETURN_IF_ERROR(biases(ffn, name, out));
    return out;
  }

  // Only the biases of an FFN (into out's bias pointers).
  Status biases(const FfnWeights& ffn, const std::string& name, DeviceFfn& out) {
    MOENAV_ASSIGN_OR_RETURN(out.gate_bias, vector(ffn.gate_bias, name + ".gate_bias"));
    MOENAV_ASSIGN_OR_RETURN(out.up_bias, vector(ffn.up_bias, name + ".up_bias"));
    MOENAV_ASSIGN_OR_RETURN(out.down_bias, vector(ffn.down_bias, name + ".down_bias"));
    return ok_status();
  }

  // A stacked [n, rows, cols] tensor as n matrices.
  Expected<std::vector<DeviceWeight>> stacked(const TensorView& tensor, const std::string& name) {
    MOENAV_ASSIGN_OR_RETURN(const DeviceWeight whole, weight(tensor, name));
    std::vector<DeviceWeight> out;
    for (int64_t i = 0; i < tensor.shape[0]; ++i) {
      const TensorView one = tensor.slice(i);
      out.push_back({one.dtype, one.rows(), one.cols(),
                     static_cast<const char*>(whole.data) + i * one.bytes()});
    }
    return out;
  }

  Expected<DeviceMla> mla(const MlaWeights& mla, const std::string& name) {
    DeviceMla out;
    MOENAV_ASSIGN_OR_RETURN(out.q_a, weight(mla.q_a, name + " q_a"));
    MOENAV_ASSIGN_OR_RETURN(out.q_a_norm, vector(mla.q_a_norm, name + " q_a_norm"));
    MOENAV_ASSIGN_OR_RETURN(out.q_b, weight(mla.q_b, name + " q_b"));
    MOENAV_ASSIGN_OR_RETURN(out.q, weight(mla.q, name + " q"));
    MOENAV_ASSIGN_OR_RETURN(out.kv_a, weight(mla.kv_a, name + " kv_a"));
    MOENAV_ASSIGN_OR_RETURN(out.kv_a_norm, vector(mla.kv_a_norm, name + " kv_a_norm"));
    MOENAV_ASSIGN_OR_RETURN(out.k_b, stacked(mla.k_b, name + " k_b"));
    MOENAV_ASSIGN_OR_RETURN(out.v_b, stacked(mla.v_b, name + " v_b"));
    return out;
  }

 private:
  Expected<void*> bytes(const TensorView& tensor, const std::string& name) {
    MOENAV_ASSIGN_OR_RETURN(DeviceBuffer buffer, context_.allocate(tensor.bytes(), name));
    MOENAV_RETURN_IF_ERROR(context_.upload(buffer, tensor.data, tensor.bytes()));
    void* data = buffer.data();
    storage_.push_back(std::move(buffer));
    return data;
  }

  cuda::Context& context_;
  std::vector<DeviceBuffer>& storage_;
};

// The tables of device routing, for experts of uniform dtype and shape per projection.
Status upload_expert_tables(DeviceLayer& layer, cuda::Context& context,
                            std::vector<DeviceBuffer>& storage, const std::string& name) {
  if (layer.experts.empty()) return ok_status();
  auto same = [](const DeviceWeight& a, const DeviceWeight& b) {
    return a.dtype == b.dtype && a.rows == b.rows && a.cols == b.cols;
  };
  const DeviceFfn& first = layer.experts.front();
  for (const DeviceFfn& expert : layer.experts) {
    if (!same(expert.gate, first.gate) || !same(expert.up, first.up) || !same(expert.down, first.down)) {
      return ok_status();  // mixed types: the host routes this layer
    }
  }
  if (first.gate.cols % 32 != 0 || first.down.cols % 32 != 0) return ok_status();  // rows of partial chunks
  auto table = [&](const std::vector<const void*>& entries, const char* what) -> Expected<const void* const*> {
    const auto bytes = static_cast<int64_t>(entries.size() * sizeof(void*));
    MOENAV_ASSIGN_OR_RETURN(DeviceBuffer buffer, context.allocate(bytes, fmt::format("{} {} table", name, what)));
    MOENAV_RETURN_IF_ERROR(context.upload(buffer, entries.data(), bytes));
    const auto* device = buffer.as<const void* const>();
    storage.push_back(std::move(buffer));
    return device;
  };
  auto data = [&](const DeviceWeight DeviceFfn::*projection, const char* what) {
    std::vector<const void*> entries;
    for (const DeviceFfn& expert : layer.experts) entries.push_back((expert.*projection).data);
    return table(entries, what);
  };
  // Biases are all there or all absent (expert_bias); a null table stands for none.
  auto bias = [&](const float* DeviceFfn::*projection, const char* what) -> Expected<const float* const*> {
    if (first.*projection == nullptr) return nullptr;
    std::vector<const void*> entries;
    for (const DeviceFfn& expert : layer.experts) entries.push_back(expert.*projection);
    MOENAV_ASSIGN_OR_RETURN(const void* const* device, table(entries, what));
    return reinterpret_cast<const float* const*>(device);
  };
  cuda::ExpertTables& t = layer.tables;
  t.gate = first.gate, t.up = first.up, t.down = first.down;
  MOENAV_ASSIGN_OR_RETURN(t.gate_data, data(&DeviceFfn::gate, "expert gate"));
  MOENAV_ASSIGN_OR_RETURN(t.up_data, data(&DeviceFfn::up, "expert up"));
  MOENAV_ASSIGN_OR_RETURN(t.down_data, data(&DeviceFfn::down, "expert down"));
  MOENAV_ASSIGN_OR_RETURN(t.gate_bias, bias(&DeviceFfn::gate_bias, "expert gate bias"));
  MOENAV_ASSIGN_OR_RETURN(t.up_bias, bias(&DeviceFfn::up_bias, "expert up bias"));
  MOENAV_ASSIGN_OR_RETURN(t.down_bias, bias(&DeviceFfn::down_bias, "expert down bias"));
  return ok_status();
}

// What the device expert cache is planned from: the budget, every weight but the experts, and a
// reserve for activations (a 512-row batch: residual stream, projections, FFN, logits), the KV
// cache of up to 4096 positions in its element type and cuBLAS' workspace.
DeviceSlotInputs device_slot_inputs(const Model& model, int64_t budget, int64_t miss_bytes, DType kv_type) {
  const ModelConfig& c = model.config;
  DeviceSlotInputs in;
  in.budget_bytes = budget;
  in.miss_bytes = miss_bytes;
  const std::vector<int64_t> key_bytes = expert_key_bytes(model);
  in.resident_bytes = model.total_bytes() - std::accumulate(key_bytes.begin(), key_bytes.end(), int64_t{0});
  const int64_t ffn = std::max({c.expert_ffn, c.dense_ffn, c.shared_expert_ffn});
  const int64_t kv = c.n_layers * c.kv_cache_width() * std::min<int64_t>(c.context_length, 4096);
  const int64_t rows = 512 * (10 * c.hidden + 3 * ffn + c.vocab);
  in.reserve_bytes = dtype_bytes(kv_type, kv) + rows * int64_t{sizeof(float)} + (int64_t{64} << 20);
  in.slot_bytes = device_slot_bytes(model);
  for (int64_t l = 0; l < c.n_layers; ++l) in.n_moe_layers += c.is_moe_layer(l) ? 1 : 0;
  in.n_experts = c.n_experts;
  return in;
}

}  // namespace

CudaDecoder::CudaDecoder() = default;
CudaDecoder::~CudaDecoder() = default;  // members go in reverse: buffers, weights, then the context

int64_t CudaDecoder::peak_bytes() const { return context_->peak_bytes(); }

bool CudaDecoder::caches_experts() const { return weights_->experts != nullptr; }

ExpertCounters CudaDecoder::expert_counters() const {
  return weights_->experts ? weights_->experts->counters() : ExpertCounters{};
}

void CudaDecoder::reset_expert_counters() {
  if (weights_->experts) weights_->experts->reset_counters();
}

Expected<std::unique_ptr<CudaDecoder>> CudaDecoder::create(const Model& model,
                                                           const EngineConfig& config,
                                                           ThreadPool& pool) {
  int64_t budget = 0;
  if (!config.device.gpu_memory.empty()) {
    MOENAV_ASSIGN_OR_RETURN(budget, parse_byte_size(config.device.gpu_memory));
  }
  std::unique_ptr<CudaDecoder> decoder(new CudaDecoder());
  decoder->model_ = &model;
  decoder->pool_ = &pool;
  MOENAV_ASSIGN_OR_RETURN(decoder->context_, cuda::Context::create(0, budget));
  decoder->kv_type_ = config.kv_cache.type == "f16" ? DType::F16 : DType::F32;
  decoder->graphs_enabled_ = config.device.cuda_graphs;
  decoder->context_->set_gemm_precision(config.device.gemm_precision == "bf16" ? cuda::GemmPrecision::Bf16
                                                                              : cuda::GemmPrecision::F32);
  cuda::Context& context = *decoder->context_;
  const ModelConfig& c = model.config;
  const ModelWeights& w = model.weights;
  decoder->weights_.reset(new Weights{{}, nullptr, {}, nullptr, {}, nullptr, Rope(c)});
  Weights& device = *decoder->weights_;
  Uploader upload(context, device.storage);
  MOENAV_ASSIGN_OR_RETURN(const int64_t miss_bytes, device_miss_bytes(model, config));
  MOENAV_ASSIGN_OR_RETURN(
      const DeviceSlotPlan slots,
      plan_device_slots(config.placement.expert_cache.size,
                        device_slot_inputs(model, context.budget_bytes(), miss_bytes, decoder->kv_type_)));
  auto with_budget_hint = [&](Status status) {
    if (slots.cached) return status;
    return status.with_context(fmt::format(
        "device.backend 'cuda' with placement.expert_cache.size '{}' keeps all {} of weights on "
        "the GPU; --cache-size auto keeps the experts in host memory and caches what fits",
        config.placement.expert_cache.size, format_bytes(model.total_bytes())));
  };
  auto upload_all = [&]() -> Status {
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const LayerWeights& layer = w.layers[static_cast<size_t>(l)];
      const std::string name = fmt::format("layer {}", l);
      DeviceLayer out;
      MOENAV_ASSIGN_OR_RETURN(out.attn_norm, upload.vector(layer.attn_norm, name + " attn_norm"));
      MOENAV_ASSIGN_OR_RETURN(out.ffn_norm, upload.vector(layer.ffn_norm, name + " ffn_norm"));
      MOENAV_ASSIGN_OR_RETURN(out.q_norm, upload.vector(layer.attn_q_norm, name + " q_norm"));
      MOENAV_ASSIGN_OR_RETURN(out.k_norm, upload.vector(layer.attn_k_norm, name + " k_norm"));
      MOENAV_ASSIGN_OR_RETURN(out.sinks, upload.vector(layer.attn_sinks, name + " sinks"));
      MOENAV_ASSIGN_OR_RETURN(out.q, upload.weight(layer.attn_q, name + " attn_q"));
      MOENAV_ASSIGN_OR_RETURN(out.k, upload.weight(layer.attn_k, name + " attn_k"));
      MOENAV_ASSIGN_OR_RETURN(out.v, upload.weight(layer.attn_v, name + " attn_v"));
      MOENAV_ASSIGN_OR_RETURN(out.o, upload.weight(layer.attn_output, name + " attn_output"));
      MOENAV_ASSIGN_OR_RETURN(out.q_bias, upload.vector(layer.attn_q_bias, name + " attn_q_bias"));
      MOENAV_ASSIGN_OR_RETURN(out.k_bias, upload.vector(layer.attn_k_bias, name + " attn_k_bias"));
      MOENAV_ASSIGN_OR_RETURN(out.v_bias, upload.vector(layer.attn_v_bias, name + " attn_v_bias"));
      MOENAV_ASSIGN_OR_RETURN(out.o_bias, upload.vector(layer.attn_output_bias, name + " attn_output_bias"));
      if (c.attention == AttentionKind::Mla) {
        MOENAV_ASSIGN_OR_RETURN(out.mla, upload.mla(layer.mla, name));
      }
      if (c.is_moe_layer(l)) {
        MOENAV_ASSIGN_OR_RETURN(out.router, upload.weight(layer.router, name + " router"));
        for (size_t e = 0; e < layer.experts.size() && !slots.cached; ++e) {
          MOENAV_ASSIGN_OR_RETURN(DeviceFfn expert,
                                  upload.ffn(layer.experts[e], fmt::format("{} expert {}", name, e)));
          out.experts.push_back(expert);
        }
        for (size_t e = 0; e < layer.experts.size() && slots.cached && c.expert_bias; ++e) {
          DeviceFfn biases;
          MOENAV_RETURN_IF_ERROR(upload.biases(layer.experts[e], fmt::format("{} expert {}", name, e), biases));
          out.expert_biases.push_back(biases);
        }
        MOENAV_RETURN_IF_ERROR(upload_expert_tables(out, context, device.storage, name));
        MOENAV_ASSIGN_OR_RETURN(out.router_bias, upload.vector(layer.router_bias, name + " router bias"));
        MOENAV_ASSIGN_OR_RETURN(out.selection_bias,
                                upload.vector(layer.expert_selection_bias, name + " selection bias"));
        if (c.n_shared_experts > 0) {
          MOENAV_ASSIGN_OR_RETURN(out.shared, upload.ffn(layer.shared_expert, name + " shared expert"));
          MOENAV_ASSIGN_OR_RETURN(out.shared_gate,
                                  upload.weight(layer.shared_expert_gate, name + " shared expert gate"));
        }
      } else {
        MOENAV_ASSIGN_OR_RETURN(out.dense, upload.ffn(layer.dense, name + " ffn"));
      }
      device.layers.push_back(std::move(out));
    }
    MOENAV_ASSIGN_OR_RETURN(device.output_norm, upload.vector(w.output_norm, "output_norm"));
    MOENAV_ASSIGN_OR_RETURN(device.output, upload.weight(w.output, "output"));
    const std::vector<float>& frequency = device.rope.inverse_frequency();
    const TensorView frequency_view{DType::F32, Shape{static_cast<int64_t>(frequency.size())}, frequency.data()};
    MOENAV_ASSIGN_OR_RETURN(device.inverse_frequency, upload.vector(frequency_view, "RoPE frequencies"));
    return ok_status();
  };
  MOENAV_RETURN_IF_ERROR(with_budget_hint(upload_all()));
  decoder->groups_experts_ = context.gemm_precision() == cuda::GemmPrecision::Bf16 && !slots.cached;
  if (slots.cached) {
    MOENAV_ASSIGN_OR_RETURN(device.experts, DeviceExpertCache::create(context, model, config, slots, pool));
  }
  decoder->buffers_ = std::make_unique<Buffers>();
  return decoder;
}

Status CudaDecoder::ensure_capacity(int64_t n_rows, int64_t max_k) {
  Buffers& b = *buffers_;
  if (n_rows <= b.rows && max_k <= b.k) return ok_status();
  const ModelConfig& c = model_->config;
  const int64_t rows = std::max(n_rows, b.rows), k = std::max({max_k, b.k, int64_t{1}});
  const int64_t ffn = std::max({c.expert_ffn, c.dense_ffn, c.shared_expert_ffn});
  MOENAV_RETURN_IF_ERROR(context_->synchronize());  // the old buffers may still be in use
  graph_ = cuda::Graph();  // it recorded the old buffers
  graph_key_.clear();
  b = Buffers();
  auto floats = [&](DeviceBuffer& buffer, int64_t count, const char* what) -> Status {
    MOENAV_ASSIGN_OR_RETURN(buffer, context_->allocate(count * int64_t{sizeof(float)}, what));
    return ok_status();
  };
  MOENAV_RETURN_IF_ERROR(floats(b.hidden, rows * c.hidden, "the residual stream"));
  MOENAV_RETURN_IF_ERROR(floats(b.normed, rows * c.hidden, "normed activations"));
  const bool mla = c.attention == AttentionKind::Mla;
  const int64_t q_width = mla ? c.n_heads * (c.qk_nope_dim + c.qk_rope_dim) : c.q_dim();
  const int64_t attention_width = mla ? c.n_heads * c.v_head_dim : c.q_dim();
  MOENAV_RETURN_IF_ERROR(floats(b.q, rows * q_width, "queries"));
  MOENAV_RETURN_IF_ERROR(floats(b.k_rows, rows * c.kv_dim(), "keys"));
  MOENAV_RETURN_IF_ERROR(floats(b.v, rows * c.kv_dim(), "values"));
  MOENAV_RETURN_IF_ERROR(floats(b.attention, rows * attention_width, "attention output"));
  if (mla) {
    const int64_t latent = c.kv_lora_rank, latent_query = c.n_heads * c.kv_cache_width();
    MOENAV_RETURN_IF_ERROR(floats(b.mla_q_a, rows * std::max<int64_t>(c.q_lora_rank, 1), "MLA q LoRA rows"));
    MOENAV_RETURN_IF_ERROR(floats(b.mla_kv, rows * c.kv_cache_width(), "MLA kv rows"));
    MOENAV_RETURN_IF_ERROR(floats(b.mla_latent, rows * latent, "MLA latents"));
    MOENAV_RETURN_IF_ERROR(floats(b.mla_query, rows * latent_query, "MLA latent queries"));
    MOENAV_RETURN_IF_ERROR(floats(b.mla_output, rows * latent_query, "MLA latent outputs"));
    MOENAV_RETURN_IF_ERROR(floats(b.mla_head_in, rows * std::max(c.qk_nope_dim, latent), "MLA head input"));
    MOENAV_RETURN_IF_ERROR(floats(b.mla_head_out, rows * std::max(c.v_head_dim, latent), "MLA head output"));
  }
  MOENAV_RETURN_IF_ERROR(floats(b.block_output, rows * c.hidden, "block output"));
  MOENAV_RETURN_IF_ERROR(floats(b.router_logits, rows * std::max<int64_t>(c.n_experts, 1), "router logits"));
  MOENAV_RETURN_IF_ERROR(floats(b.gathered, rows * c.hidden, "expert input"));
  MOENAV_RETURN_IF_ERROR(floats(b.gate, rows * ffn, "ffn gate"));
  MOENAV_RETURN_IF_ERROR(floats(b.up, rows * ffn, "ffn up"));
  MOENAV_RETURN_IF_ERROR(floats(b.expert_output, rows * c.hidden, "expert output"));
  MOENAV_RETURN_IF_ERROR(floats(b.positions, rows, "positions"));
  MOENAV_RETURN_IF_ERROR(floats(b.routes, rows * k, "routes"));
  MOENAV_RETURN_IF_ERROR(floats(b.route_weights, rows * k, "route weights"));
  // [rows * k] routes, route weights, pair rows, then [n_experts] group experts, [n_experts + 1] group firsts
  const int64_t grouping = rows * k + 2 * c.n_experts + 1;
  MOENAV_ASSIGN_OR_RETURN(b.route_staging,
                          context_->allocate_pinned((2 * rows * k + grouping) * int64_t{sizeof(float)}));
  MOENAV_ASSIGN_OR_RETURN(b.input_staging,
                          context_->allocate_pinned(rows * (c.hidden + 1) * int64_t{sizeof(float)}));
  if (weights_->experts != nullptr && weights_->experts->needs_host_rows()) {
    MOENAV_ASSIGN_OR_RETURN(b.normed_staging, context_->allocate_pinned(rows * c.hidden * int64_t{sizeof(float)}));
  }
  MOENAV_ASSIGN_OR_RETURN(b.routed_staging,
                          context_->allocate_pinned(2 * c.n_layers * rows * k * int64_t{sizeof(float)}));
  MOENAV_RETURN_IF_ERROR(floats(b.selected, rows * k, "selected experts"));
  MOENAV_RETURN_IF_ERROR(floats(b.selected_weights, rows * k, "selected expert weights"));
  const int64_t pairs = std::min(rows, kDeviceRoutingRows) * k;
  MOENAV_RETURN_IF_ERROR(floats(b.pair_activated, pairs * ffn, "routed experts' activations"));
  MOENAV_RETURN_IF_ERROR(floats(b.pair_output, pairs * c.hidden, "routed experts' outputs"));
  if (groups_experts_) {  // every (token, slot) pair of a batch; bf16 rows are 2 bytes an element
    MOENAV_ASSIGN_OR_RETURN(b.grouped_input, context_->allocate(rows * k * c.hidden * 2, "grouped experts' input"));
    MOENAV_ASSIGN_OR_RETURN(b.grouped_activated,
                            context_->allocate(rows * k * c.expert_ffn * 2, "grouped experts' activations"));
    MOENAV_RETURN_IF_ERROR(floats(b.grouped_output, rows * k * c.hidden, "grouped experts' outputs"));
    MOENAV_RETURN_IF_ERROR(floats(b.grouping, grouping, "expert groups"));
  }
  MOENAV_RETURN_IF_ERROR(floats(b.logits, rows * c.vocab, "logits"));
  b.rows = rows;
  b.k = k;
  return ok_status();
}


Status CudaDecoder::forward(std::span<const Segment> segments, std::span<const int32_t> tokens,
                            const RoutingPolicy& policy, const RoutingObserver& observer) {
  const ModelConfig& c = model_->config;
  const ModelWeights& w = model_->weights;
  cuda::Context& context = *context_;
  const int64_t n_rows = static_cast<int64_t>(tokens.size());
  if (n_rows == 0) return ok_status();
  int64_t max_k = 0;
  for (int64_t l = 0; l < c.n_layers; ++l) max_k = std::max(max_k, policy.k_for_layer(l));
  MOENAV_RETURN_IF_ERROR(ensure_capacity(n_rows, max_k));
  Buffers& b = *buffers_;

  b.host_positions.clear();
  const bool mla = c.attention == AttentionKind::Mla;
  for (const Segment& segment : segments) {
    if (!*segment.cache) {
      *segment.cache = DeviceKvCachePtr(
          new DeviceKvCache{&context, c.n_layers, mla ? c.kv_cache_width() : c.kv_dim(), segment.context,
                            kv_type_, !mla, 0, {}, {}},
          &destroy);
    }
    MOENAV_RETURN_IF_ERROR((*segment.cache)->reserve(segment.first_position + segment.n_tokens));
    for (int64_t i = 0; i < segment.n_tokens; ++i)
      b.host_positions.push_back(static_cast<int32_t>(segment.first_position + i));
  }
  // Embeddings are looked up on the host (any dtype) and staged with the positions; queue_step
  // uploads them.
  auto* staged_rows = static_cast<float*>(b.input_staging.data());
  auto* staged_positions = reinterpret_cast<int32_t*>(staged_rows + b.rows * c.hidden);
  for (int64_t r = 0; r < n_rows; ++r) {
    quant::dequantize_row(w.token_embedding.dtype, w.token_embedding.row(tokens[static_cast<size_t>(r)]),
                          staged_rows + r * c.hidden, c.hidden);
  }
  std::copy(b.host_positions.begin(), b.host_positions.end(), staged_positions);

  const bool on_device = routes_on_device(n_rows, policy);
  MOENAV_RETURN_IF_ERROR(run_step(segments, n_rows, policy, observer, on_device));
  int64_t out_row = 0;
  for (const Segment& segment : segments) {
    const int64_t n_out = segment.all_logits ? segment.n_tokens : 1;
    segment.logits->resize(static_cast<size_t>(n_out * c.vocab));
    MOENAV_RETURN_IF_ERROR(context.download(segment.logits->data(), b.logits, n_out * c.vocab * int64_t{sizeof(float)},
                                            out_row * c.vocab * int64_t{sizeof(float)}));
    out_row += n_out;
  }
  // The downloads above waited for the stream: the selections copied back have arrived.
  if (on_device && observer) observe_device_routes(n_rows, policy, observer);
  return ok_status();
}

// What a recorded step depends on besides the staged input: the rows of each segment and its
// cache (buffers and capacity; positions are read on the device), which logits it wants, the
// routing (k per layer) and whether the selections are copied back for an observer.
std::vector<int64_t> CudaDecoder::step_key(std::span<const Segment> segments, int64_t n_rows,
                                           const RoutingPolicy& policy, bool observe) const {
  std::vector<int64_t> key = {n_rows, observe ? 1 : 0};
  for (const Segment& segment : segments) {
    const DeviceKvCache& cache = **segment.cache;
    key.insert(key.end(), {reinterpret_cast<intptr_t>(cache.keys.data()), reinterpret_cast<intptr_t>(cache.values.data()),
                           cache.capacity, segment.n_tokens, segment.all_logits ? 1 : 0});
  }
  for (int64_t l = 0; l < model_->config.n_layers; ++l) key.push_back(policy.k_for_layer(l));
  return key;
}

// Steps routed on the device have no host work between their kernels, so they replay as a CUDA
// graph: a shape seen for the first time runs eagerly (which also sizes the scratch area), the
// next step of that shape is recorded, and later ones launch the recording.
Status CudaDecoder::run_step(std::span<const Segment> segments, int64_t n_rows, const RoutingPolicy& policy,
                             const RoutingObserver& observer, bool on_device) {
  graphing_ = graphs_enabled_ && on_device;
  if (!graphing_) return queue_step(segments, n_rows, policy, observer, on_device);
  cuda::Context& context = *context_;
  std::vector<int64_t> key = step_key(segments, n_rows, policy, static_cast<bool>(observer));
  if (graph_ && key == graph_key_ && context.is_current(graph_)) {
    ++graph_launches_;
    return context.launch(graph_);
  }
  graph_ = cuda::Graph();
  if (key != graph_key_) {
    graph_key_ = std::move(key);
    return queue_step(segments, n_rows, policy, observer, on_device);
  }
  MOENAV_RETURN_IF_ERROR(context.begin_capture());
  const Status queued = queue_step(segments, n_rows, policy, observer, on_device);
  Expected<cuda::Graph> graph = context.end_capture();
  MOENAV_RETURN_IF_ERROR(queued.with_context("recording a decode step as a CUDA graph (--cuda-graphs false runs without)"));
  if (!graph.ok()) return graph.status().with_context("recording a decode step as a CUDA graph (--cuda-graphs false runs without)");
  graph_ = std::move(graph).value();
  ++graph_launches_;
  return context.launch(graph_);
}

// The step's device work, from the input upload to the logits at b.logits (each segment's rows
// one after another), without waiting for the device.
Status CudaDecoder::queue_step(std::span<const Segment> segments, int64_t n_rows, const RoutingPolicy& policy,
                               const RoutingObserver& observer, bool on_device) {
  const ModelConfig& c = model_->config;
  cuda::Context& context = *context_;
  Buffers& b = *buffers_;
  auto* staged_rows = static_cast<float*>(b.input_staging.data());
  auto* staged_positions = reinterpret_cast<int32_t*>(staged_rows + b.rows * c.hidden);
  MOENAV_RETURN_IF_ERROR(context.upload_pinned(b.hidden, staged_rows, n_rows * c.hidden * int64_t{sizeof(float)}));
  MOENAV_RETURN_IF_ERROR(context.upload_pinned(b.positions, staged_positions, n_rows * int64_t{sizeof(int32_t)}));

  float* hidden = b.hidden.as<float>();
  float* normed = b.normed.as<float>();
  float* block_output = b.block_output.as<float>();
  const bool mla = c.attention == AttentionKind::Mla;
  // Each block's residual add runs in the launch of the norm that follows it.
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const DeviceLayer& layer = weights_->layers[static_cast<size_t>(l)];
    MOENAV_RETURN_IF_ERROR(l == 0 ? cuda::rms_norm(context, hidden, layer.attn_norm, normed, n_rows, c.hidden,
                                                   c.norm_eps)
                                  : cuda::add_rms_norm(context, hidden, block_output, layer.attn_norm, normed,
                                                       n_rows, c.hidden, c.norm_eps));
    MOENAV_RETURN_IF_ERROR(mla ? mla_attention(l, segments) : attention(l, segments));
    MOENAV_RETURN_IF_ERROR(
        cuda::add_rms_norm(context, hidden, block_output, layer.ffn_norm, normed, n_rows, c.hidden, c.norm_eps));
    if (c.is_moe_layer(l)) {
      MOENAV_RETURN_IF_ERROR(moe(l, n_rows, policy, observer, on_device));
    } else {
      MOENAV_RETURN_IF_ERROR(run_ffn(context, layer.dense, normed, n_rows, b.gate.as<float>(),
                                     b.up.as<float>(), block_output));
    }
  }
  if (c.n_layers > 0) MOENAV_RETURN_IF_ERROR(cuda::add(context, hidden, block_output, hidden, n_rows * c.hidden));

  int64_t row = 0, out_row = 0;
  for (const Segment& segment : segments) {
    const int64_t first = segment.all_logits ? row : row + segment.n_tokens - 1;
    const int64_t n_out = segment.all_logits ? segment.n_tokens : 1;
    float* segment_normed = normed + out_row * c.hidden;
    MOENAV_RETURN_IF_ERROR(cuda::rms_norm(context, hidden + first * c.hidden, weights_->output_norm, segment_normed,
                                          n_out, c.hidden, c.norm_eps));
    MOENAV_RETURN_IF_ERROR(cuda::matmul(context, weights_->output, segment_normed, n_out,
                                        b.logits.as<float>() + out_row * c.vocab));
    row += segment.n_tokens;
    out_row += n_out;
  }
  return ok_status();
}

}  // namespace moenav
