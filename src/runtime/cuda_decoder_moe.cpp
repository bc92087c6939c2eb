// The CUDA decoder's mixture-of-experts layers: routing on the host (as the CPU) or on the
// device (decode of resident experts), the experts resident, cached or computed on the CPU, and
// the shared expert.
#include <algorithm>

#include "layers/moe/router.h"
#include "layers/moe/routing_policy.h"
#include "model/model.h"
#include "runtime/cuda_decoder_state.h"

namespace moenav {
namespace {

// gate <- act(gate, up) over n floats, as layers/ffn.cpp's activation.
Status activate(cuda::Context& context, float* gate, const float* up, int64_t n, const Activation& activation) {
  if (activation.kind == FfnActivation::Swiglu) return cuda::silu_mul(context, gate, up, gate, n);
  return cuda::clamped_swiglu(context, gate, up, gate, n, activation.alpha, activation.limit);
}

}  // namespace

Status run_ffn(cuda::Context& context, const DeviceFfn& ffn, const float* input, int64_t n,
               float* gate, float* up, float* output, const Activation& activation) {
  const int64_t width = ffn.gate.rows;
  const cuda::MatmulPart gate_up[] = {{ffn.gate, gate}, {ffn.up, up}};
  MOENAV_RETURN_IF_ERROR(cuda::matmul_parts(context, gate_up, 2, input, n));
  MOENAV_RETURN_IF_ERROR(cuda::add_bias(context, gate, ffn.gate_bias, n, width));
  MOENAV_RETURN_IF_ERROR(cuda::add_bias(context, up, ffn.up_bias, n, width));
  MOENAV_RETURN_IF_ERROR(activate(context, gate, up, n * width, activation));
  MOENAV_RETURN_IF_ERROR(cuda::matmul(context, ffn.down, gate, n, output));
  return cuda::add_bias(context, output, ffn.down_bias, n, ffn.down.rows);
}

bool CudaDecoder::routes_on_device(int64_t n_rows, const RoutingPolicy& policy) const {
  const ModelConfig& c = model_->config;
  if (n_rows > kDeviceRoutingRows || weights_->experts != nullptr || policy.adjusts_selection() ||
      c.n_expert_groups > 1 || c.n_experts > 256) {
    return false;
  }
  for (int64_t l = 0; l < c.n_layers; ++l) {
    if (!c.is_moe_layer(l)) continue;
    const int64_t k = policy.k_for_layer(l);
    if (weights_->layers[static_cast<size_t>(l)].tables.gate_data == nullptr || policy.allowed(l) != nullptr ||
        k < 1 || k > 16 || k > c.n_experts) {
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
  MOENAV_RETURN_IF_ERROR(cuda::add_bias(context, b.router_logits.as<float>(), layer.router_bias, n_rows, c.n_experts));
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
  cuda::SelectedExperts experts;
  experts.tables = layer.tables;
  experts.selected = b.selected.as<int32_t>();
  experts.n_pairs = n_rows * k;
  experts.k = k;
  const Activation activation = expert_activation(c);
  const cuda::GluArgs glu{activation.kind == FfnActivation::ClampedSwiglu, activation.alpha, activation.limit};
  MOENAV_RETURN_IF_ERROR(cuda::selected_gate_up(context, experts, normed, glu, b.pair_activated.as<float>()));
  MOENAV_RETURN_IF_ERROR(cuda::selected_down(context, experts, b.pair_activated.as<float>(), b.pair_output.as<float>()));
  MOENAV_RETURN_IF_ERROR(cuda::combine_slots(context, b.pair_output.as<float>(), b.selected_weights.as<float>(),
                                             n_rows, k, c.hidden, b.block_output.as<float>()));
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
  // Router logits come back to the host, where routing is selected exactly as on the CPU; the
  // normed rows too when CPU misses or the prefetcher need them, queued before the logits'
  // download so that its one wait for the compute stream covers both.
  MOENAV_RETURN_IF_ERROR(cuda::matmul(context, layer.router, normed, n_rows, b.router_logits.as<float>()));
  DeviceExpertCache* cache = weights_->experts.get();
  auto* host_normed = static_cast<float*>(b.normed_staging.data());
  if (cache != nullptr && cache->needs_host_rows()) {
    MOENAV_RETURN_IF_ERROR(context.download_pinned(host_normed, b.normed, n_rows * c.hidden * int64_t{sizeof(float)}));
  }
  std::vector<float>& logits = b.host_router_logits;
  logits.resize(static_cast<size_t>(n_rows * c.n_experts));
  MOENAV_RETURN_IF_ERROR(context.download(logits.data(), b.router_logits,
                                          static_cast<int64_t>(logits.size() * sizeof(float))));
  if (!host_layer.router_bias.empty()) {
    const float* bias = static_cast<const float*>(host_layer.router_bias.data);
    for (int64_t t = 0; t < n_rows; ++t)
      for (int64_t e = 0; e < c.n_experts; ++e) logits[static_cast<size_t>(t * c.n_experts + e)] += bias[e];
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
  b.host_pair_rows.assign(static_cast<size_t>(n_rows * k), -1);
  std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
  for (int64_t t = 0; t < n_rows; ++t) {
    for (int64_t slot = 0; slot < k; ++slot) {
      const int32_t expert = routing.expert(t, slot);
      if (expert < 0) continue;
      const size_t at = static_cast<size_t>(fill[static_cast<size_t>(expert)]++);
      b.host_routes[at] = static_cast<int32_t>(t);
      b.host_route_weights[at] = routing.weight(t, slot);
      b.host_pair_rows[static_cast<size_t>(t * k + slot)] = static_cast<int32_t>(at);
    }
  }
  if (assigned > 0) {
    auto* staged_routes = static_cast<int32_t*>(b.route_staging.data());
    float* staged_weights = reinterpret_cast<float*>(staged_routes + b.rows * b.k);
    std::copy_n(b.host_routes.data(), assigned, staged_routes);
    std::copy_n(b.host_route_weights.data(), assigned, staged_weights);
    MOENAV_RETURN_IF_ERROR(context.upload_pinned(b.routes, staged_routes, assigned * int64_t{sizeof(int32_t)}));
    MOENAV_RETURN_IF_ERROR(context.upload_pinned(b.route_weights, staged_weights, assigned * int64_t{sizeof(float)}));
  }
  if (groups_experts(l, n_rows)) return grouped_experts(l, n_rows, k, offsets);
  float* output = b.block_output.as<float>();
  MOENAV_RETURN_IF_ERROR(context.zero(output, n_rows * c.hidden * int64_t{sizeof(float)}));
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
                                              cache->needs_host_rows() ? host_normed : nullptr));
  }
  struct CpuExpert {
    int64_t expert;
    const FfnWeights* host;
    DeviceWeight down;  // a split miss: its down projection runs on the GPU
    bool split() const { return down.data != nullptr; }
  };
  std::vector<CpuExpert> on_cpu;
  for (int64_t e = 0; e < c.n_experts; ++e) {
    const int64_t first = offsets[static_cast<size_t>(e)], n = offsets[static_cast<size_t>(e + 1)] - first;
    if (n == 0) continue;
    DeviceFfn weights;
    if (cache != nullptr) {
      MOENAV_ASSIGN_OR_RETURN(const DeviceExpertCache::Lease lease, cache->acquire(l, static_cast<int32_t>(e)));
      if (lease.skipped || lease.host != nullptr) {  // skipped: as a skipped selection in Combine
        if (lease.host != nullptr) on_cpu.push_back({e, lease.host, lease.down});
        // A split miss's down slot stays leased until its kernels are queued below.
        if (lease.down.data == nullptr) MOENAV_RETURN_IF_ERROR(cache->release(l, static_cast<int32_t>(e)));
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
  // after them, so the sum's order differs from the all-resident run's. A split miss leaves the
  // CPU with its gate/up activations, which the GPU multiplies by the fetched down projection.
  std::vector<int64_t> cpu_first;  // where each CPU expert's result starts in host_output
  int64_t cpu_floats = 0;
  for (const CpuExpert& cpu : on_cpu) {
    cpu_first.push_back(cpu_floats);
    const int64_t n = offsets[static_cast<size_t>(cpu.expert + 1)] - offsets[static_cast<size_t>(cpu.expert)];
    cpu_floats += n * (cpu.split() ? c.expert_ffn : c.hidden);
  }
  b.host_output.resize(static_cast<size_t>(cpu_floats));
  for (size_t i = 0; i < on_cpu.size(); ++i) {
    const CpuExpert& cpu = on_cpu[i];
    const int64_t first = offsets[static_cast<size_t>(cpu.expert)];
    const int64_t n = offsets[static_cast<size_t>(cpu.expert + 1)] - first;
    b.host_gathered.resize(static_cast<size_t>(n * c.hidden));
    for (int64_t r = 0; r < n; ++r) {
      const float* row = host_normed + b.host_routes[static_cast<size_t>(first + r)] * c.hidden;
      std::copy(row, row + c.hidden, b.host_gathered.begin() + r * c.hidden);
    }
    b.host_work.ffn_gate.resize(static_cast<size_t>(n * c.expert_ffn));
    b.host_work.ffn_up.resize(static_cast<size_t>(n * c.expert_ffn));
    float* result = b.host_output.data() + cpu_first[i];
    if (cpu.split()) {
      ffn_gate_up(*cpu.host, b.host_gathered.data(), n, b.host_work, *pool_, expert_activation(c));
      std::copy_n(b.host_work.ffn_gate.data(), n * c.expert_ffn, result);
    } else {
      ffn_forward(*cpu.host, b.host_gathered.data(), n, result, b.host_work, *pool_, expert_activation(c));
    }
  }
  for (size_t i = 0; i < on_cpu.size(); ++i) {
    const CpuExpert& cpu = on_cpu[i];
    const auto expert = static_cast<int32_t>(cpu.expert);
    const int64_t first = offsets[static_cast<size_t>(cpu.expert)];
    const int64_t n = offsets[static_cast<size_t>(cpu.expert + 1)] - first;
    const float* result = b.host_output.data() + cpu_first[i];
    // upload() waits for the stream: the GPU experts' kernels are done with gate and expert_output.
    if (cpu.split()) {
      MOENAV_RETURN_IF_ERROR(context.upload(b.gate, result, n * c.expert_ffn * int64_t{sizeof(float)}));
      MOENAV_RETURN_IF_ERROR(cache->await_down(expert));
      MOENAV_RETURN_IF_ERROR(cuda::matmul(context, cpu.down, b.gate.as<float>(), n, b.expert_output.as<float>()));
      const float* bias =
          layer.expert_biases.empty() ? nullptr : layer.expert_biases[static_cast<size_t>(expert)].down_bias;
      MOENAV_RETURN_IF_ERROR(cuda::add_bias(context, b.expert_output.as<float>(), bias, n, c.hidden));
      MOENAV_RETURN_IF_ERROR(cache->release(l, expert));
    } else {
      MOENAV_RETURN_IF_ERROR(context.upload(b.expert_output, result, n * c.hidden * int64_t{sizeof(float)}));
    }
    MOENAV_RETURN_IF_ERROR(cuda::scatter_add_rows(context, b.expert_output.as<float>(), c.hidden,
                                                  b.routes.as<int32_t>() + first,
                                                  b.route_weights.as<float>() + first, n, output));
  }
  if (cache != nullptr) cache->end_layer(l);
  return shared_expert(l, n_rows);
}

bool CudaDecoder::groups_experts(int64_t l, int64_t n_rows) const {
  return groups_experts_ && n_rows > cuda::kMatvecMaxTokens &&
         weights_->layers[static_cast<size_t>(l)].tables.gate_data != nullptr;
}

// The routed experts of a host-routed batch as grouped GEMMs: the pairs (sorted by expert in
// b.routes, b.route_weights) gathered as bf16 rows, each projection one launch over every
// expert's group, then combined in slot order through the pair rows.
Status CudaDecoder::grouped_experts(int64_t l, int64_t n_rows, int64_t k, std::span<const int64_t> offsets) {
  const ModelConfig& c = model_->config;
  const DeviceLayer& layer = weights_->layers[static_cast<size_t>(l)];
  Buffers& b = *buffers_;
  cuda::Context& context = *context_;
  // Staged after the routes and their weights: [n_rows * k] pair rows, the group experts, the group firsts.
  int32_t* staged = static_cast<int32_t*>(b.route_staging.data()) + 2 * b.rows * b.k;
  std::copy(b.host_pair_rows.begin(), b.host_pair_rows.end(), staged);
  int32_t* group_experts = staged + n_rows * k;
  int64_t n_groups = 0, n_row_tiles = 0;
  for (int64_t e = 0; e < c.n_experts; ++e) {
    const int64_t rows = offsets[static_cast<size_t>(e + 1)] - offsets[static_cast<size_t>(e)];
    if (rows == 0) continue;
    group_experts[n_groups++] = static_cast<int32_t>(e);
    n_row_tiles += cuda::grouped_row_tiles(rows);
  }
  int32_t* group_first = group_experts + n_groups;
  group_first[0] = 0;
  for (int64_t g = 0; g < n_groups; ++g) {
    const int64_t e = group_experts[g];
    group_first[g + 1] = group_first[g] + static_cast<int32_t>(offsets[static_cast<size_t>(e + 1)] - offsets[static_cast<size_t>(e)]);
  }
  const int64_t staged_words = n_rows * k + 2 * n_groups + 1;
  MOENAV_RETURN_IF_ERROR(context.upload_pinned(b.grouping, staged, staged_words * int64_t{sizeof(int32_t)}));
  const int32_t* pair_rows = b.grouping.as<int32_t>();

  cuda::GroupedExperts experts;
  experts.tables = layer.tables;
  experts.group_experts = pair_rows + n_rows * k;
  experts.group_first = experts.group_experts + n_groups;
  experts.n_groups = n_groups;
  experts.n_row_tiles = n_row_tiles;
  const Activation activation = expert_activation(c);
  const cuda::GluArgs glu{activation.kind == FfnActivation::ClampedSwiglu, activation.alpha, activation.limit};
  auto* input = b.grouped_input.as<uint16_t>();
  auto* activated = b.grouped_activated.as<uint16_t>();
  MOENAV_RETURN_IF_ERROR(cuda::gather_rows_bf16(context, b.normed.as<float>(), c.hidden, b.routes.as<int32_t>(),
                                                offsets.back(), input));
  MOENAV_RETURN_IF_ERROR(cuda::grouped_gate_up(context, experts, input, glu, activated));
  MOENAV_RETURN_IF_ERROR(cuda::grouped_down(context, experts, activated, b.grouped_output.as<float>()));
  MOENAV_RETURN_IF_ERROR(cuda::combine_slots(context, b.grouped_output.as<float>(), b.route_weights.as<float>(),
                                             n_rows, k, c.hidden, b.block_output.as<float>(), pair_rows));
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

}  // namespace moenav
