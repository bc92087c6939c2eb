// The CUDA decoder's device state, shared by its three sources: cuda_decoder.cpp (weights
// upload, buffers, the forward pass), cuda_decoder_attention.cpp (GQA and MLA attention) and
// cuda_decoder_moe.cpp (routing, experts, shared experts). Internal to src/runtime.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/cuda.h"
#include "backend/cuda_ops.h"
#include "layers/batch.h"
#include "layers/ffn.h"
#include "layers/rope.h"
#include "runtime/cuda_decoder.h"
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
  // Resident experts of one dtype and shape per projection: the device tables the selected and
  // grouped expert kernels read (null data tables otherwise). The router's bias and the selection
  // bias on the device.
  cuda::ExpertTables tables;
  const float* router_bias = nullptr;
  const float* selection_bias = nullptr;
};

constexpr int64_t kDeviceRoutingRows = 4;

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
  // Device routing: the [rows, k] selection and weights, and each (token, slot) pair's
  // activations and expert output.
  DeviceBuffer selected, selected_weights, pair_activated, pair_output;
  // Grouped experts (prefill under gemm_precision bf16): the pairs' input rows and activations
  // (bf16), their outputs, and [pair rows | group experts | group firsts] (int32).
  DeviceBuffer grouped_input, grouped_activated, grouped_output, grouping;
  cuda::PinnedBuffer routed_staging;  // the selections copied back for the observer
  // The step's input: [rows, hidden] embeddings, then [rows] positions, uploaded without a stream
  // wait. A step reuses it after the previous step's logit download, which waits for the stream.
  cuda::PinnedBuffer input_staging;
  // Host routing with CPU misses or a prefetcher: the MoE layer's normed rows [rows, hidden].
  cuda::PinnedBuffer normed_staging;
  std::vector<float> host_router_logits;   // [T, n_experts]
  std::vector<int32_t> host_positions;     // [T]
  std::vector<int32_t> host_routes;        // rows of each expert, experts one after another
  std::vector<float> host_route_weights;
  std::vector<int32_t> host_pair_rows;     // [T * k] each selection's index in host_routes, or -1
  // Where routes and route weights are staged for their upload, which then does not wait: each
  // MoE layer reuses it after its router-logit download, which waits for the stream, so the
  // previous layer's copies from it have run.
  cuda::PinnedBuffer route_staging;  // [rows * k] int32 routes, [rows * k] float weights, grouping
  // Experts computed on the CPU (miss.policy cpu): one expert's rows and output, and the FFN
  // workspace.
  std::vector<float> host_gathered, host_output;
  Workspace host_work;
};

// ffn_forward on the device: down(act(gate(x) + b_gate, up(x) + b_up)) + b_down; gate and up
// are [n, width] scratch.
Status run_ffn(cuda::Context& context, const DeviceFfn& ffn, const float* input, int64_t n,
               float* gate, float* up, float* output, const Activation& activation = {});

}  // namespace moenav
