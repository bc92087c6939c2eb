#include "runtime/cuda_decoder.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include "backend/cuda.h"
#include "backend/cuda_ops.h"
#include "core/byte_size.h"
#include "experts/store_factory.h"
#include "layers/attention_mla.h"
#include "layers/batch.h"
#include "layers/ffn.h"
#include "layers/moe/router.h"
#include "layers/moe/routing_policy.h"
#include "layers/rope.h"
#include "model/model.h"
#include "quant/quant.h"
#include "runtime/device_expert_cache.h"

namespace moenav {

using cuda::DeviceBuffer;
using cuda::DeviceFfn;
using cuda::DeviceWeight;

struct DeviceKvCache {
  cuda::Context* context = nullptr;
  int64_t n_layers = 0;
  int64_t kv_dim = 0;
  int64_t context_length = 0;
  DType type = DType::F32;  // F32 or F16 (kv_cache.type)
  bool has_values = true;   // false for MLA, whose keys row holds the latent and rotary key
  int64_t capacity = 0;     // positions held per layer
  DeviceBuffer keys;        // [n_layers, capacity, kv_dim] of type
  DeviceBuffer values;      // as keys, or empty without values

  int64_t element_bytes() const { return type == DType::F16 ? 2 : 4; }
  void* keys_at(int64_t layer, int64_t position) const {
    return keys.as<char>() + (layer * capacity + position) * kv_dim * element_bytes();
  }
  void* values_at(int64_t layer, int64_t position) const {
    return values.as<char>() + (layer * capacity + position) * kv_dim * element_bytes();
  }

  // Room for positions [0, positions): doubling from 256, capped at the context length; the
  // cached rows move to the new buffers.
  Status reserve(int64_t positions) {
    if (positions <= capacity) return ok_status();
    int64_t grown = capacity == 0 ? 256 : capacity;
    while (grown < positions) grown *= 2;
    grown = std::min(grown, context_length);
    const int64_t bytes = n_layers * grown * kv_dim * element_bytes();
    MOENAV_ASSIGN_OR_RETURN(DeviceBuffer new_keys, context->allocate(bytes, "the KV cache (keys)"));
    DeviceBuffer new_values;
    if (has_values) {
      MOENAV_ASSIGN_OR_RETURN(new_values, context->allocate(bytes, "the KV cache (values)"));
    }
    const int64_t layer_bytes = capacity * kv_dim * element_bytes();
    for (int64_t layer = 0; layer < n_layers && capacity > 0; ++layer) {
      const int64_t to = layer * grown * kv_dim * element_bytes(), from = layer * layer_bytes;
      MOENAV_RETURN_IF_ERROR(context->copy(new_keys.as<char>() + to, keys.as<char>() + from, layer_bytes));
      if (!has_values) continue;
      MOENAV_RETURN_IF_ERROR(context->copy(new_values.as<char>() + to, values.as<char>() + from, layer_bytes));
    }
    keys = std::move(new_keys);  // cudaFree waits for the queued copies
    values = std::move(new_values);
    capacity = grown;
    return ok_status();
  }
};

namespace {

void destroy(DeviceKvCache* cache) { delete cache; }

// Multi-head latent attention's weights (MlaWeights); k_b and v_b one matrix per head.
struct DeviceMla {
  DeviceWeight q_a, q_b, q, kv_a;
  const float* q_a_norm = nullptr;
  const float* kv_a_norm = nullptr;
  std::vector<DeviceWeight> k_b, v_b;
};

struct DeviceLayer {
  const float* attn_norm = nullptr;
  const float* ffn_norm = nullptr;
  const float* q_norm = nullptr;
  const float* k_norm = nullptr;
  const float* sinks = nullptr;
  const float* q_bias = nullptr;
  const float* k_bias = nullptr;
  const float* v_bias = nullptr;
  const float* o_bias = nullptr;
  DeviceWeight q, k, v, o, router;
  DeviceMla mla;
  std::vector<DeviceFfn> experts;
  // The experts' biases when the experts themselves are cached (the biases stay resident).
  std::vector<DeviceFfn> expert_biases;
  DeviceFfn shared, dense;
  DeviceWeight shared_gate;  // [1, hidden]: sigmoid(x . gate) scales the shared expert
  // Resident experts of one dtype and shape per projection: the device tables of their data
  // that matmul_selected reads (null otherwise), and the selection bias on the device.
  const void* const* gate_table = nullptr;
  const void* const* up_table = nullptr;
  const void* const* down_table = nullptr;
  const float* selection_bias = nullptr;
};

constexpr int64_t kDeviceRoutingRows = 4;

}  // namespace

struct CudaDecoder::Weights {
  std::vector<DeviceBuffer> storage;  // owns every uploaded tensor
  std::unique_ptr<DeviceExpertCache> experts;  // null when every expert is in `layers`
  std::vector<DeviceLayer> layers;
  const float* output_norm = nullptr;
  DeviceWeight output;
  const float* inverse_frequency = nullptr;
  Rope rope;
};

struct CudaDecoder::Buffers {
  int64_t rows = 0;  // capacity in token rows
  int64_t k = 0;     // capacity in experts per token
  DeviceBuffer hidden, normed, q, k_rows, v, attention, block_output, router_logits, gathered,
      gate, up, expert_output, positions, routes, route_weights, logits;
  // MLA only: the q LoRA rows, the kv_a rows [latent | rotary key], the latent alone, the
  // latent-space queries and outputs [rows, heads, latent + rotary], and one head's matmul input
  // and output.
  DeviceBuffer mla_q_a, mla_kv, mla_latent, mla_query, mla_output, mla_head_in, mla_head_out;
  // Device routing: the [rows, k] selection and weights, and the row of each pair (i / k).
  DeviceBuffer selected, selected_weights, pair_rows;
  cuda::PinnedBuffer routed_staging;  // the selections copied back for the observer
  // The step's input: [rows, hidden] embeddings, then [rows] positions, uploaded without a stream
  // wait. A step reuses it after the previous step's logit download, which waits for the stream.
  cuda::PinnedBuffer input_staging;
  std::vector<float> host_router_logits;   // [T, n_experts]
  std::vector<int32_t> host_positions;     // [T]
  std::vector<int32_t> host_routes;        // rows of each expert, experts one after another
  std::vector<float> host_route_weights;
  // Where routes and route weights are staged for their upload, which then does not wait: each
  // MoE layer reuses it after its router-logit download, which waits for the stream, so the
  // previous layer's copies from it have run.
  cuda::PinnedBuffer route_staging;  // [rows * k] int32 routes, then [rows * k] float weights
  // Experts computed on the CPU (miss.policy cpu): the layer's normed rows, one expert's rows and
  // output, and the FFN workspace.
  std::vector<float> host_normed, host_gathered, host_output;
  Workspace host_work;
};

namespace {

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

}  // namespace

namespace {

// What the device expert cache is planned from: the budget, every weight but the experts, and a
// reserve for activations (a 512-row batch: residual stream, projections, FFN, logits), the KV
// cache of up to 4096 positions and cuBLAS' workspace.
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
  auto table = [&](const DeviceWeight DeviceFfn::*projection, const char* what) -> Expected<const void* const*> {
    std::vector<const void*> data;
    for (const DeviceFfn& expert : layer.experts) data.push_back((expert.*projection).data);
    const auto bytes = static_cast<int64_t>(data.size() * sizeof(void*));
    MOENAV_ASSIGN_OR_RETURN(DeviceBuffer buffer, context.allocate(bytes, fmt::format("{} {} table", name, what)));
    MOENAV_RETURN_IF_ERROR(context.upload(buffer, data.data(), bytes));
    const auto* device = buffer.as<const void* const>();
    storage.push_back(std::move(buffer));
    return device;
  };
  MOENAV_ASSIGN_OR_RETURN(layer.gate_table, table(&DeviceFfn::gate, "expert gate"));
  MOENAV_ASSIGN_OR_RETURN(layer.up_table, table(&DeviceFfn::up, "expert up"));
  MOENAV_ASSIGN_OR_RETURN(layer.down_table, table(&DeviceFfn::down, "expert down"));
  return ok_status();
}

DeviceSlotInputs device_slot_inputs(const Model& model, int64_t budget, int64_t lowbit_bytes) {
  const ModelConfig& c = model.config;
  DeviceSlotInputs in;
  in.budget_bytes = budget;
  in.lowbit_bytes = lowbit_bytes;
  const std::vector<int64_t> key_bytes = expert_key_bytes(model);
  in.resident_bytes = model.total_bytes() - std::accumulate(key_bytes.begin(), key_bytes.end(), int64_t{0});
  const int64_t ffn = std::max({c.expert_ffn, c.dense_ffn, c.shared_expert_ffn});
  const int64_t kv = c.n_layers * c.kv_cache_width() * std::min<int64_t>(c.context_length, 4096);
  const int64_t rows = 512 * (10 * c.hidden + 3 * ffn + c.vocab);
  in.reserve_bytes = (kv + rows) * int64_t{sizeof(float)} + (int64_t{64} << 20);
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
  decoder->context_->set_gemm_precision(config.device.gemm_precision == "bf16" ? cuda::GemmPrecision::Bf16
                                                                              : cuda::GemmPrecision::F32);
  cuda::Context& context = *decoder->context_;
  const ModelConfig& c = model.config;
  const ModelWeights& w = model.weights;
  decoder->weights_.reset(new Weights{{}, nullptr, {}, nullptr, {}, nullptr, Rope(c)});
  Weights& device = *decoder->weights_;
  Uploader upload(context, device.storage);
  MOENAV_ASSIGN_OR_RETURN(const int64_t lowbit_bytes, device_lowbit_bytes(model, config));
  MOENAV_ASSIGN_OR_RETURN(
      const DeviceSlotPlan slots,
      plan_device_slots(config.placement.expert_cache.size,
                        device_slot_inputs(model, context.budget_bytes(), lowbit_bytes)));
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
  MOENAV_ASSIGN_OR_RETURN(b.route_staging, context_->allocate_pinned(2 * rows * k * int64_t{sizeof(float)}));
  MOENAV_ASSIGN_OR_RETURN(b.input_staging,
                          context_->allocate_pinned(rows * (c.hidden + 1) * int64_t{sizeof(float)}));
  MOENAV_ASSIGN_OR_RETURN(b.routed_staging,
                          context_->allocate_pinned(2 * c.n_layers * rows * k * int64_t{sizeof(float)}));
  MOENAV_RETURN_IF_ERROR(floats(b.selected, rows * k, "selected experts"));
  MOENAV_RETURN_IF_ERROR(floats(b.selected_weights, rows * k, "selected expert weights"));
  MOENAV_RETURN_IF_ERROR(floats(b.pair_rows, rows * k, "pair rows"));
  std::vector<int32_t> pair_rows(static_cast<size_t>(rows * k));
  for (size_t i = 0; i < pair_rows.size(); ++i) pair_rows[i] = static_cast<int32_t>(static_cast<int64_t>(i) / k);
  MOENAV_RETURN_IF_ERROR(context_->upload(b.pair_rows, pair_rows.data(), rows * k * int64_t{sizeof(int32_t)}));
  MOENAV_RETURN_IF_ERROR(floats(b.logits, rows * c.vocab, "logits"));
  b.rows = rows;
  b.k = k;
  return ok_status();
}

namespace {

// gate <- act(gate, up) over n floats, as layers/ffn.cpp's activation.
Status activate(cuda::Context& context, float* gate, const float* up, int64_t n, const Activation& activation) {
  if (activation.kind == FfnActivation::Swiglu) return cuda::silu_mul(context, gate, up, gate, n);
  return cuda::clamped_swiglu(context, gate, up, gate, n, activation.alpha, activation.limit);
}

// ffn_forward on the device: down(act(gate(x) + b_gate, up(x) + b_up)) + b_down.
Status run_ffn(cuda::Context& context, const DeviceFfn& ffn, const float* input, int64_t n,
               float* gate, float* up, float* output, const Activation& activation = {}) {
  const int64_t width = ffn.gate.rows;
  MOENAV_RETURN_IF_ERROR(cuda::matmul(context, ffn.gate, input, n, gate));
  MOENAV_RETURN_IF_ERROR(cuda::add_bias(context, gate, ffn.gate_bias, n, width));
  MOENAV_RETURN_IF_ERROR(cuda::matmul(context, ffn.up, input, n, up));
  MOENAV_RETURN_IF_ERROR(cuda::add_bias(context, up, ffn.up_bias, n, width));
  MOENAV_RETURN_IF_ERROR(activate(context, gate, up, n * width, activation));
  MOENAV_RETURN_IF_ERROR(cuda::matmul(context, ffn.down, gate, n, output));
  return cuda::add_bias(context, output, ffn.down_bias, n, ffn.down.rows);
}

}  // namespace

Status CudaDecoder::attention(int64_t l, std::span<const Segment> segments) {
  const ModelConfig& c = model_->config;
  const DeviceLayer& layer = weights_->layers[static_cast<size_t>(l)];
  Buffers& b = *buffers_;
  cuda::Context& context = *context_;
  int64_t n_rows = 0;
  for (const Segment& segment : segments) n_rows += segment.n_tokens;
  float* q = b.q.as<float>();
  float* k = b.k_rows.as<float>();
  float* v = b.v.as<float>();
  MOENAV_RETURN_IF_ERROR(cuda::matmul(context, layer.q, b.normed.as<float>(), n_rows, q));
  MOENAV_RETURN_IF_ERROR(cuda::matmul(context, layer.k, b.normed.as<float>(), n_rows, k));
  MOENAV_RETURN_IF_ERROR(cuda::matmul(context, layer.v, b.normed.as<float>(), n_rows, v));
  MOENAV_RETURN_IF_ERROR(cuda::add_bias(context, q, layer.q_bias, n_rows, c.q_dim()));
  MOENAV_RETURN_IF_ERROR(cuda::add_bias(context, k, layer.k_bias, n_rows, c.kv_dim()));
  MOENAV_RETURN_IF_ERROR(cuda::add_bias(context, v, layer.v_bias, n_rows, c.kv_dim()));
  if (c.qk_norm) {
    const int64_t q_width = c.qk_norm_full_width ? c.q_dim() : c.head_dim;
    const int64_t k_width = c.qk_norm_full_width ? c.kv_dim() : c.head_dim;
    MOENAV_RETURN_IF_ERROR(cuda::rms_norm(context, q, layer.q_norm, q, n_rows * c.q_dim() / q_width, q_width, c.norm_eps));
    MOENAV_RETURN_IF_ERROR(cuda::rms_norm(context, k, layer.k_norm, k, n_rows * c.kv_dim() / k_width, k_width, c.norm_eps));
  }
  cuda::RopeArgs rope;
  rope.n_tokens = n_rows;
  rope.head_stride = c.head_dim;
  rope.rotary_dim = weights_->rope.rotary_dim();
  rope.inverse_frequency = weights_->inverse_frequency;
  rope.positions = b.positions.as<int32_t>();
  rope.neox = weights_->rope.style() == RopeStyle::Neox;
  rope.attention_factor = weights_->rope.attention_factor();
  rope.x = q, rope.n_heads = c.n_heads, rope.token_stride = c.q_dim();
  MOENAV_RETURN_IF_ERROR(cuda::rope(context, rope));
  rope.x = k, rope.n_heads = c.n_kv_heads, rope.token_stride = c.kv_dim();
  MOENAV_RETURN_IF_ERROR(cuda::rope(context, rope));

  const float scale = c.attention_scale > 0.0f ? c.attention_scale
                                               : 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  int64_t row = 0;
  for (const Segment& segment : segments) {
    DeviceKvCache& cache = **segment.cache;
    const int64_t n = segment.n_tokens * c.kv_dim();
    MOENAV_RETURN_IF_ERROR(cuda::store_kv(context, k + row * c.kv_dim(), cache.keys_at(l, segment.first_position), n, cache.type));
    MOENAV_RETURN_IF_ERROR(cuda::store_kv(context, v + row * c.kv_dim(), cache.values_at(l, segment.first_position), n, cache.type));
    cuda::AttentionArgs args;
    args.queries = q + row * c.q_dim();
    args.keys = cache.keys_at(l, 0);
    args.values = cache.values_at(l, 0);
    args.kv_type = cache.type;
    args.sinks = layer.sinks;
    args.output = b.attention.as<float>() + row * c.q_dim();
    args.n_tokens = segment.n_tokens;
    args.n_heads = c.n_heads;
    args.n_kv_heads = c.n_kv_heads;
    args.head_dim = c.head_dim;
    args.first_position = segment.first_position;
    args.window = c.uses_sliding_window(l) ? c.sliding_window : 0;
    args.scale = scale;
    MOENAV_RETURN_IF_ERROR(cuda::attention(context, args));
    row += segment.n_tokens;
  }
  MOENAV_RETURN_IF_ERROR(cuda::matmul(context, layer.o, b.attention.as<float>(), n_rows, b.block_output.as<float>()));
  return cuda::add_bias(context, b.block_output.as<float>(), layer.o_bias, n_rows, c.hidden);
}

// mla_attention_forward on the device. The latent attention is multi-query attention with one
// KV head of width latent + rotary: queries [q_latent | q_rope] against the cached rows
// [latent | k_rope], whose values are the same rows (the output's rotary tail is unused).
Status CudaDecoder::mla_attention(int64_t l, std::span<const Segment> segments) {
  const ModelConfig& c = model_->config;
  const DeviceMla& mla = weights_->layers[static_cast<size_t>(l)].mla;
  Buffers& b = *buffers_;
  cuda::Context& context = *context_;
  int64_t n_rows = 0;
  for (const Segment& segment : segments) n_rows += segment.n_tokens;
  const int64_t heads = c.n_heads, nope = c.qk_nope_dim, rope_dim = c.qk_rope_dim;
  const int64_t rank = c.kv_lora_rank, v_dim = c.v_head_dim;
  const int64_t qk = nope + rope_dim, width = rank + rope_dim;  // width: a cached row
  const float* normed = b.normed.as<float>();
  float* q = b.q.as<float>();      // [T, heads, qk]
  float* kv = b.mla_kv.as<float>();  // [T, width]
  if (mla.q_a.data == nullptr) {
    MOENAV_RETURN_IF_ERROR(cuda::matmul(context, mla.q, normed, n_rows, q));
  } else {
    float* q_a = b.mla_q_a.as<float>();
    MOENAV_RETURN_IF_ERROR(cuda::matmul(context, mla.q_a, normed, n_rows, q_a));
    MOENAV_RETURN_IF_ERROR(cuda::rms_norm(context, q_a, mla.q_a_norm, q_a, n_rows, c.q_lora_rank, kLatentNormEps));
    MOENAV_RETURN_IF_ERROR(cuda::matmul(context, mla.q_b, q_a, n_rows, q));
  }
  MOENAV_RETURN_IF_ERROR(cuda::matmul(context, mla.kv_a, normed, n_rows, kv));
  float* latent = b.mla_latent.as<float>();
  MOENAV_RETURN_IF_ERROR(cuda::copy_columns(context, kv, width, latent, rank, n_rows, rank));
  MOENAV_RETURN_IF_ERROR(cuda::rms_norm(context, latent, mla.kv_a_norm, latent, n_rows, rank, kLatentNormEps));
  MOENAV_RETURN_IF_ERROR(cuda::copy_columns(context, latent, rank, kv, width, n_rows, rank));
  cuda::RopeArgs rope;
  rope.n_tokens = n_rows;
  rope.rotary_dim = weights_->rope.rotary_dim();
  rope.inverse_frequency = weights_->inverse_frequency;
  rope.positions = b.positions.as<int32_t>();
  rope.neox = weights_->rope.style() == RopeStyle::Neox;
  rope.attention_factor = weights_->rope.attention_factor();
  rope.x = kv + rank, rope.n_heads = 1, rope.head_stride = width, rope.token_stride = width;
  MOENAV_RETURN_IF_ERROR(cuda::rope(context, rope));
  rope.x = q + nope, rope.n_heads = heads, rope.head_stride = qk, rope.token_stride = heads * qk;
  MOENAV_RETURN_IF_ERROR(cuda::rope(context, rope));

  // Latent queries [T, heads, width]: k_b[h] . q_nope[h], then q_rope.
  float* query = b.mla_query.as<float>();
  float* head_in = b.mla_head_in.as<float>();
  float* head_out = b.mla_head_out.as<float>();
  for (int64_t h = 0; h < heads; ++h) {
    MOENAV_RETURN_IF_ERROR(cuda::copy_columns(context, q + h * qk, heads * qk, head_in, nope, n_rows, nope));
    MOENAV_RETURN_IF_ERROR(cuda::matmul(context, mla.k_b[static_cast<size_t>(h)], head_in, n_rows, head_out));
    MOENAV_RETURN_IF_ERROR(cuda::copy_columns(context, head_out, rank, query + h * width, heads * width, n_rows, rank));
  }
  MOENAV_RETURN_IF_ERROR(cuda::copy_columns(context, q + nope, qk, query + rank, width, n_rows * heads, rope_dim));

  const float scale = c.attention_scale > 0.0f ? c.attention_scale : 1.0f / std::sqrt(static_cast<float>(qk));
  float* latent_output = b.mla_output.as<float>();
  int64_t row = 0;
  for (const Segment& segment : segments) {
    DeviceKvCache& cache = **segment.cache;
    MOENAV_RETURN_IF_ERROR(cuda::store_kv(context, kv + row * width, cache.keys_at(l, segment.first_position),
                                          segment.n_tokens * width, cache.type));
    cuda::AttentionArgs args;
    args.queries = query + row * heads * width;
    args.keys = cache.keys_at(l, 0);
    args.values = cache.keys_at(l, 0);
    args.kv_type = cache.type;
    args.output = latent_output + row * heads * width;
    args.n_tokens = segment.n_tokens;
    args.n_heads = heads;
    args.n_kv_heads = 1;
    args.head_dim = width;
    args.first_position = segment.first_position;
    args.scale = scale;
    MOENAV_RETURN_IF_ERROR(cuda::attention(context, args));
    row += segment.n_tokens;
  }
  // Values: attention[T, h] = v_b[h] . latent_output[T, h], then the output projection.
  float* attention = b.attention.as<float>();  // [T, heads * v_dim]
  for (int64_t h = 0; h < heads; ++h) {
    MOENAV_RETURN_IF_ERROR(cuda::copy_columns(context, latent_output + h * width, heads * width, head_in, rank, n_rows, rank));
    MOENAV_RETURN_IF_ERROR(cuda::matmul(context, mla.v_b[static_cast<size_t>(h)], head_in, n_rows, head_out));
    MOENAV_RETURN_IF_ERROR(cuda::copy_columns(context, head_out, v_dim, attention + h * v_dim, heads * v_dim, n_rows, v_dim));
  }
  const DeviceLayer& layer = weights_->layers[static_cast<size_t>(l)];
  MOENAV_RETURN_IF_ERROR(cuda::matmul(context, layer.o, attention, n_rows, b.block_output.as<float>()));
  return cuda::add_bias(context, b.block_output.as<float>(), layer.o_bias, n_rows, c.hidden);
}

bool CudaDecoder::routes_on_device(int64_t n_rows, const RoutingPolicy& policy) const {
  const ModelConfig& c = model_->config;
  if (n_rows > kDeviceRoutingRows || weights_->experts != nullptr || policy.adjusts_selection() ||
      c.n_expert_groups > 1 || c.n_experts > 256 || c.expert_bias) {
    return false;
  }
  for (int64_t l = 0; l < c.n_layers; ++l) {
    if (!c.is_moe_layer(l)) continue;
    const int64_t k = policy.k_for_layer(l);
    if (weights_->layers[static_cast<size_t>(l)].gate_table == nullptr || policy.allowed(l) != nullptr ||
        !model_->weights.layers[static_cast<size_t>(l)].router_bias.empty() || k < 1 || k > 16 ||
        k > c.n_experts) {
      return false;
    }
  }
  return true;
}

void CudaDecoder::observe_device_routes(int64_t n_rows, const RoutingPolicy& policy,
                                        const RoutingObserver& observer) const {
  const ModelConfig& c = model_->config;
  const Buffers& b = *buffers_;
  const auto* experts = static_cast<const int32_t*>(b.routed_staging.data());
  const auto* weights = reinterpret_cast<const float*>(experts + c.n_layers * b.rows * b.k);
  Routing routing;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    if (!c.is_moe_layer(l)) continue;
    const int64_t k = policy.k_for_layer(l), first = l * b.rows * b.k, n = n_rows * k;
    routing.n_tokens = n_rows;
    routing.k = k;
    routing.experts.assign(experts + first, experts + first + n);
    routing.weights.assign(weights + first, weights + first + n);
    observer(l, routing);
  }
}

Status CudaDecoder::moe_on_device(int64_t l, int64_t n_rows, int64_t k, bool observe) {
  const ModelConfig& c = model_->config;
  const DeviceLayer& layer = weights_->layers[static_cast<size_t>(l)];
  Buffers& b = *buffers_;
  cuda::Context& context = *context_;
  const float* normed = b.normed.as<float>();
  MOENAV_RETURN_IF_ERROR(cuda::matmul(context, layer.router, normed, n_rows, b.router_logits.as<float>()));
  cuda::RouterArgs args;
  args.logits = b.router_logits.as<float>();
  args.selection_bias = layer.selection_bias;
  args.n_tokens = n_rows;
  args.n_experts = c.n_experts;
  args.k = k;
  args.score = c.gating == Gating::Softmax   ? cuda::RouterScore::Softmax
               : c.gating == Gating::Sigmoid ? cuda::RouterScore::Sigmoid
                                             : cuda::RouterScore::SoftmaxOfTopK;
  args.normalize = c.norm_topk_prob;
  args.scale = c.routed_scaling_factor;
  args.experts = b.selected.as<int32_t>();
  args.weights = b.selected_weights.as<float>();
  MOENAV_RETURN_IF_ERROR(cuda::router_top_k(context, args));
  if (observe) {  // [n_layers, rows * k] experts, then weights; read after the step's last wait
    const int64_t at = l * b.rows * b.k, all = c.n_layers * b.rows * b.k;
    auto* experts = static_cast<int32_t*>(b.routed_staging.data());
    MOENAV_RETURN_IF_ERROR(context.download_pinned(experts + at, b.selected, n_rows * k * int64_t{sizeof(int32_t)}));
    MOENAV_RETURN_IF_ERROR(context.download_pinned(reinterpret_cast<float*>(experts + all) + at, b.selected_weights,
                                                   n_rows * k * int64_t{sizeof(float)}));
  }
  float* output = b.block_output.as<float>();
  MOENAV_RETURN_IF_ERROR(context.zero(output, n_rows * c.hidden * int64_t{sizeof(float)}));
  const DeviceFfn& shape = layer.experts.front();
  float* gate = b.gate.as<float>();
  float* up = b.up.as<float>();
  for (int64_t pair = 0; pair < n_rows * k; ++pair) {  // pair = token * k + slot
    const int32_t* selected = b.selected.as<int32_t>() + pair;
    const float* input = normed + (pair / k) * c.hidden;
    MOENAV_RETURN_IF_ERROR(cuda::matmul_selected(context, shape.gate, layer.gate_table, selected, input, 1, gate));
    MOENAV_RETURN_IF_ERROR(cuda::matmul_selected(context, shape.up, layer.up_table, selected, input, 1, up));
    MOENAV_RETURN_IF_ERROR(activate(context, gate, up, shape.gate.rows, expert_activation(c)));
    MOENAV_RETURN_IF_ERROR(cuda::matmul_selected(context, shape.down, layer.down_table, selected, gate, 1,
                                                 b.expert_output.as<float>()));
    MOENAV_RETURN_IF_ERROR(cuda::scatter_add_rows(context, b.expert_output.as<float>(), c.hidden,
                                                  b.pair_rows.as<int32_t>() + pair,
                                                  b.selected_weights.as<float>() + pair, 1, output));
  }
  return shared_expert(l, n_rows);
}

Status CudaDecoder::moe(int64_t l, int64_t n_rows, const RoutingPolicy& policy,
                        const RoutingObserver& observer, bool on_device) {
  if (on_device) return moe_on_device(l, n_rows, policy.k_for_layer(l), static_cast<bool>(observer));
  const ModelConfig& c = model_->config;
  const LayerWeights& host_layer = model_->weights.layers[static_cast<size_t>(l)];
  const DeviceLayer& layer = weights_->layers[static_cast<size_t>(l)];
  Buffers& b = *buffers_;
  cuda::Context& context = *context_;
  const float* normed = b.normed.as<float>();
  // Router logits come back to the host, where routing is selected exactly as on the CPU.
  MOENAV_RETURN_IF_ERROR(cuda::matmul(context, layer.router, normed, n_rows, b.router_logits.as<float>()));
  std::vector<float>& logits = b.host_router_logits;
  logits.resize(static_cast<size_t>(n_rows * c.n_experts));
  MOENAV_RETURN_IF_ERROR(context.download(logits.data(), b.router_logits,
                                          static_cast<int64_t>(logits.size() * sizeof(float))));
  if (!host_layer.router_bias.empty()) {
    const float* bias = static_cast<const float*>(host_layer.router_bias.data);
    for (int64_t t = 0; t < n_rows; ++t)
      for (int64_t e = 0; e < c.n_experts; ++e) logits[static_cast<size_t>(t * c.n_experts + e)] += bias[e];
  }
  DeviceExpertCache* cache = weights_->experts.get();
  if (cache != nullptr && cache->needs_host_rows()) {  // the stream is idle here: a cheap wait
    b.host_normed.resize(static_cast<size_t>(n_rows * c.hidden));
    MOENAV_RETURN_IF_ERROR(context.download(b.host_normed.data(), b.normed,
                                            n_rows * c.hidden * int64_t{sizeof(float)}));
  }
  Routing routing;
  const int64_t k = policy.k_for_layer(l);
  select_experts(c, logits.data(), n_rows, k, policy.allowed(l), routing,
                 static_cast<const float*>(host_layer.expert_selection_bias.data));
  policy.apply(routing);
  if (observer) observer(l, routing);

  // Dispatch: the rows of each expert, experts one after another.
  std::vector<int64_t> offsets(static_cast<size_t>(c.n_experts + 1), 0);
  for (int32_t expert : routing.experts)
    if (expert >= 0) ++offsets[static_cast<size_t>(expert) + 1];
  for (int64_t e = 0; e < c.n_experts; ++e) offsets[static_cast<size_t>(e + 1)] += offsets[static_cast<size_t>(e)];
  const int64_t assigned = offsets.back();
  b.host_routes.resize(static_cast<size_t>(std::max<int64_t>(assigned, 1)));
  b.host_route_weights.resize(b.host_routes.size());
  std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
  for (int64_t t = 0; t < n_rows; ++t) {
    for (int64_t slot = 0; slot < k; ++slot) {
      const int32_t expert = routing.expert(t, slot);
      if (expert < 0) continue;
      const size_t at = static_cast<size_t>(fill[static_cast<size_t>(expert)]++);
      b.host_routes[at] = static_cast<int32_t>(t);
      b.host_route_weights[at] = routing.weight(t, slot);
    }
  }
  float* output = b.block_output.as<float>();
  MOENAV_RETURN_IF_ERROR(context.zero(output, n_rows * c.hidden * int64_t{sizeof(float)}));
  if (assigned > 0) {
    auto* staged_routes = static_cast<int32_t*>(b.route_staging.data());
    float* staged_weights = reinterpret_cast<float*>(staged_routes + b.rows * b.k);
    std::copy_n(b.host_routes.data(), assigned, staged_routes);
    std::copy_n(b.host_route_weights.data(), assigned, staged_weights);
    MOENAV_RETURN_IF_ERROR(context.upload_pinned(b.routes, staged_routes, assigned * int64_t{sizeof(int32_t)}));
    MOENAV_RETURN_IF_ERROR(context.upload_pinned(b.route_weights, staged_weights, assigned * int64_t{sizeof(float)}));
  }
  if (cache != nullptr) {
    std::vector<uint8_t> first_choice(static_cast<size_t>(c.n_experts), 0);
    for (int64_t t = 0; t < n_rows && k > 0; ++t)
      if (routing.expert(t, 0) >= 0) first_choice[static_cast<size_t>(routing.expert(t, 0))] = 1;
    std::vector<int32_t> used;
    std::vector<uint8_t> top1;
    for (int64_t e = 0; e < c.n_experts; ++e) {
      if (offsets[static_cast<size_t>(e + 1)] == offsets[static_cast<size_t>(e)]) continue;
      used.push_back(static_cast<int32_t>(e));
      top1.push_back(first_choice[static_cast<size_t>(e)]);
    }
    MOENAV_RETURN_IF_ERROR(cache->begin_layer(l, used, top1, n_rows, routing.experts, routing.k,
                                              cache->needs_host_rows() ? b.host_normed.data() : nullptr));
  }
  std::vector<std::pair<int64_t, const FfnWeights*>> on_cpu;  // (expert, host weights)
  for (int64_t e = 0; e < c.n_experts; ++e) {
    const int64_t first = offsets[static_cast<size_t>(e)], n = offsets[static_cast<size_t>(e + 1)] - first;
    if (n == 0) continue;
    DeviceFfn weights;
    if (cache != nullptr) {
      MOENAV_ASSIGN_OR_RETURN(const DeviceExpertCache::Lease lease, cache->acquire(l, static_cast<int32_t>(e)));
      if (lease.skipped || lease.host != nullptr) {  // skipped: as a skipped selection in Combine
        if (lease.host != nullptr) on_cpu.emplace_back(e, lease.host);
        MOENAV_RETURN_IF_ERROR(cache->release(l, static_cast<int32_t>(e)));
        continue;
      }
      weights = lease.weights;
      if (!layer.expert_biases.empty()) {
        const DeviceFfn& biases = layer.expert_biases[static_cast<size_t>(e)];
        weights.gate_bias = biases.gate_bias, weights.up_bias = biases.up_bias, weights.down_bias = biases.down_bias;
      }
    } else {
      weights = layer.experts[static_cast<size_t>(e)];
    }
    const int32_t* rows = b.routes.as<int32_t>() + first;
    MOENAV_RETURN_IF_ERROR(cuda::gather_rows(context, normed, c.hidden, rows, n, b.gathered.as<float>()));
    MOENAV_RETURN_IF_ERROR(run_ffn(context, weights, b.gathered.as<float>(), n, b.gate.as<float>(),
                                   b.up.as<float>(), b.expert_output.as<float>(), expert_activation(c)));
    MOENAV_RETURN_IF_ERROR(cuda::scatter_add_rows(context, b.expert_output.as<float>(), c.hidden, rows,
                                                  b.route_weights.as<float>() + first, n, output));
    // The slot may be reused by a later copy, which waits for these kernels.
    if (cache != nullptr) MOENAV_RETURN_IF_ERROR(cache->release(l, static_cast<int32_t>(e)));
  }
  // CPU misses run while the GPU works through what was queued above (nothing below waits for it
  // until every CPU expert is done); each result then joins the block output like a GPU expert's,
  // after them, so the sum's order differs from the all-resident run's.
  std::vector<int64_t> cpu_first;  // where each CPU expert's rows start in host_output
  int64_t cpu_rows = 0;
  for (const auto& [e, host] : on_cpu) {
    cpu_first.push_back(cpu_rows);
    cpu_rows += offsets[static_cast<size_t>(e + 1)] - offsets[static_cast<size_t>(e)];
  }
  b.host_output.resize(static_cast<size_t>(cpu_rows * c.hidden));
  for (size_t i = 0; i < on_cpu.size(); ++i) {
    const auto [e, host] = on_cpu[i];
    const int64_t first = offsets[static_cast<size_t>(e)], n = offsets[static_cast<size_t>(e + 1)] - first;
    b.host_gathered.resize(static_cast<size_t>(n * c.hidden));
    for (int64_t r = 0; r < n; ++r) {
      const float* row = b.host_normed.data() + b.host_routes[static_cast<size_t>(first + r)] * c.hidden;
      std::copy(row, row + c.hidden, b.host_gathered.begin() + r * c.hidden);
    }
    b.host_work.ffn_gate.resize(static_cast<size_t>(n * c.expert_ffn));
    b.host_work.ffn_up.resize(static_cast<size_t>(n * c.expert_ffn));
    ffn_forward(*host, b.host_gathered.data(), n, b.host_output.data() + cpu_first[i] * c.hidden,
                b.host_work, *pool_, expert_activation(c));
  }
  for (size_t i = 0; i < on_cpu.size(); ++i) {
    const int64_t e = on_cpu[i].first;
    const int64_t first = offsets[static_cast<size_t>(e)], n = offsets[static_cast<size_t>(e + 1)] - first;
    // upload() waits for the stream: the GPU experts' scatters are done with expert_output.
    MOENAV_RETURN_IF_ERROR(context.upload(b.expert_output, b.host_output.data() + cpu_first[i] * c.hidden,
                                          n * c.hidden * int64_t{sizeof(float)}));
    MOENAV_RETURN_IF_ERROR(cuda::scatter_add_rows(context, b.expert_output.as<float>(), c.hidden,
                                                  b.routes.as<int32_t>() + first,
                                                  b.route_weights.as<float>() + first, n, output));
  }
  if (cache != nullptr) cache->end_layer(l);
  return shared_expert(l, n_rows);
}

// The shared expert, on every row, added to the block output (scaled by sigmoid(x . gate) where
// the model gates it), as shared_expert_forward.
Status CudaDecoder::shared_expert(int64_t l, int64_t n_rows) {
  const ModelConfig& c = model_->config;
  if (c.n_shared_experts == 0) return ok_status();
  const DeviceLayer& layer = weights_->layers[static_cast<size_t>(l)];
  Buffers& b = *buffers_;
  cuda::Context& context = *context_;
  const float* normed = b.normed.as<float>();
  float* output = b.block_output.as<float>();
  float* shared = b.expert_output.as<float>();
  MOENAV_RETURN_IF_ERROR(run_ffn(context, layer.shared, normed, n_rows, b.gate.as<float>(), b.up.as<float>(), shared));
  if (layer.shared_gate.data == nullptr) return cuda::add(context, output, shared, output, n_rows * c.hidden);
  float* gate_logits = b.router_logits.as<float>();  // the router's logits are no longer needed
  MOENAV_RETURN_IF_ERROR(cuda::matmul(context, layer.shared_gate, normed, n_rows, gate_logits));
  return cuda::add_gated(context, output, shared, gate_logits, n_rows, c.hidden);
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
  // Embeddings are looked up on the host (any dtype) and uploaded: [T, hidden] floats.
  auto* staged_rows = static_cast<float*>(b.input_staging.data());
  auto* staged_positions = reinterpret_cast<int32_t*>(staged_rows + b.rows * c.hidden);
  for (int64_t r = 0; r < n_rows; ++r) {
    quant::dequantize_row(w.token_embedding.dtype, w.token_embedding.row(tokens[static_cast<size_t>(r)]),
                          staged_rows + r * c.hidden, c.hidden);
  }
  std::copy(b.host_positions.begin(), b.host_positions.end(), staged_positions);
  MOENAV_RETURN_IF_ERROR(context.upload_pinned(b.hidden, staged_rows, n_rows * c.hidden * int64_t{sizeof(float)}));
  MOENAV_RETURN_IF_ERROR(context.upload_pinned(b.positions, staged_positions, n_rows * int64_t{sizeof(int32_t)}));

  float* hidden = b.hidden.as<float>();
  float* normed = b.normed.as<float>();
  float* block_output = b.block_output.as<float>();
  const int64_t width = n_rows * c.hidden;
  const bool on_device = routes_on_device(n_rows, policy);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const DeviceLayer& layer = weights_->layers[static_cast<size_t>(l)];
    MOENAV_RETURN_IF_ERROR(cuda::rms_norm(context, hidden, layer.attn_norm, normed, n_rows, c.hidden, c.norm_eps));
    MOENAV_RETURN_IF_ERROR(mla ? mla_attention(l, segments) : attention(l, segments));
    MOENAV_RETURN_IF_ERROR(cuda::add(context, hidden, block_output, hidden, width));
    MOENAV_RETURN_IF_ERROR(cuda::rms_norm(context, hidden, layer.ffn_norm, normed, n_rows, c.hidden, c.norm_eps));
    if (c.is_moe_layer(l)) {
      MOENAV_RETURN_IF_ERROR(moe(l, n_rows, policy, observer, on_device));
    } else {
      MOENAV_RETURN_IF_ERROR(run_ffn(context, layer.dense, normed, n_rows, b.gate.as<float>(),
                                     b.up.as<float>(), block_output));
    }
    MOENAV_RETURN_IF_ERROR(cuda::add(context, hidden, block_output, hidden, width));
  }

  int64_t row = 0;
  for (const Segment& segment : segments) {
    const int64_t first = segment.all_logits ? row : row + segment.n_tokens - 1;
    const int64_t n_out = segment.all_logits ? segment.n_tokens : 1;
    MOENAV_RETURN_IF_ERROR(cuda::rms_norm(context, hidden + first * c.hidden, weights_->output_norm, normed,
                                          n_out, c.hidden, c.norm_eps));
    MOENAV_RETURN_IF_ERROR(cuda::matmul(context, weights_->output, normed, n_out, b.logits.as<float>()));
    segment.logits->resize(static_cast<size_t>(n_out * c.vocab));
    MOENAV_RETURN_IF_ERROR(context.download(segment.logits->data(), b.logits,
                                            n_out * c.vocab * int64_t{sizeof(float)}));
    row += segment.n_tokens;
  }
  // The downloads above waited for the stream: the selections copied back have arrived.
  if (on_device && observer) observe_device_routes(n_rows, policy, observer);
  return ok_status();
}

}  // namespace moenav
