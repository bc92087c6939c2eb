// The decoder on the CUDA backend with every weight resident on the device: the steps of
// Engine::forward, each one a kernel of backend/cuda_ops.h. Routing is chosen on the host from
// the router logits (select_experts, then the RoutingPolicy), as on the CPU, so both backends
// route identically and the routing observer sees every layer. Decode steps (up to
// kDeviceRoutingRows rows) of resident experts under a plain routing policy select on the device
// instead (router_top_k, then every (token, slot) pair's expert in one launch per projection
// through the experts' device tables), which saves each MoE layer a round trip to the host; the
// selections are then copied back without waiting and given to the observer, layer by layer,
// once the step's logits are in. Such steps replay as recorded CUDA graphs (device.cuda_graphs).
// Host-routed batches of more than 8 rows under gemm_precision bf16 run the resident experts as
// grouped GEMMs (every expert's rows in one launch per projection); otherwise expert by expert.
//
// Every architecture of the CPU backend runs here: multi-head latent attention (DeepSeek, its
// latent cache as on the CPU), projection and expert biases and the clamped SwiGLU (gpt-oss),
// gated shared experts (Qwen2-MoE). Experts that do not fit device.gpu_memory stay in host
// memory behind a device expert cache (device_expert_cache.h).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "backend/cuda.h"
#include "core/dtype.h"
#include "core/thread_pool.h"
#include "layers/moe/moe_layer.h"
#include "moenav/engine_config.h"
#include "moenav/expert_counters.h"
#include "moenav/status.h"

namespace moenav {

struct Model;
class RoutingPolicy;
// One sequence's keys and values on the device, grown on demand like KvCache. Sessions hold it
// through a plain function-pointer deleter so that engine.h needs no definition.
struct DeviceKvCache;
using DeviceKvCachePtr = std::unique_ptr<DeviceKvCache, void (*)(DeviceKvCache*)>;

class CudaDecoder {
 public:
  // Uploads the model's weights to device 0 within config.device.gpu_memory.
  // pool: the engine's CPU threads (experts the miss policy computes on the CPU).
  static Expected<std::unique_ptr<CudaDecoder>> create(const Model& model,
                                                       const EngineConfig& config,
                                                       ThreadPool& pool);
  ~CudaDecoder();

  // The rows of one sequence in a batch: its cache (created here when empty), where its first
  // row sits, how many rows, and which of them want logits.
  struct Segment {
    DeviceKvCachePtr* cache = nullptr;
    int64_t context = 0;         // the session's context length
    int64_t first_position = 0;
    int64_t n_tokens = 0;
    bool all_logits = false;     // else only the last row's
    std::vector<float>* logits = nullptr;  // receives [n_tokens or 1, vocab]
  };
  Status forward(std::span<const Segment> segments, std::span<const int32_t> tokens,
                 const RoutingPolicy& policy, const RoutingObserver& observer);

  int64_t peak_bytes() const;
  // Decode steps launched as a recorded CUDA graph (device.cuda_graphs).
  int64_t graph_launches() const { return graph_launches_; }
  // Whether experts live in host memory behind a device expert cache (placement.expert_cache.size
  // other than "all" where the budget does not hold them all), and its counters.
  bool caches_experts() const;
  ExpertCounters expert_counters() const;
  void reset_expert_counters();

  struct Weights;
  struct Buffers;

 private:
  CudaDecoder();
  Status ensure_capacity(int64_t n_rows, int64_t max_k);
  Status attention(int64_t layer, std::span<const Segment> segments);
  Status moe(int64_t layer, int64_t n_rows, const RoutingPolicy& policy,
             const RoutingObserver& observer, bool on_device);
  // Whether this step's MoE layers all select and run their experts on the device.
  bool routes_on_device(int64_t n_rows, const RoutingPolicy& policy) const;
  // observe: copy the selection back for the observer (observe_device_routes after the step).
  Status moe_on_device(int64_t layer, int64_t n_rows, int64_t k, bool observe);
  void observe_device_routes(int64_t n_rows, const RoutingPolicy& policy,
                             const RoutingObserver& observer) const;
  std::vector<int64_t> step_key(std::span<const Segment> segments, int64_t n_rows,
                                const RoutingPolicy& policy, bool observe) const;
  Status run_step(std::span<const Segment> segments, int64_t n_rows, const RoutingPolicy& policy,
                  const RoutingObserver& observer, bool on_device);
  Status queue_step(std::span<const Segment> segments, int64_t n_rows, const RoutingPolicy& policy,
                    const RoutingObserver& observer, bool on_device);
  bool groups_experts(int64_t layer, int64_t n_rows) const;
  Status grouped_experts(int64_t layer, int64_t n_rows, int64_t k, std::span<const int64_t> offsets);
  Status shared_expert(int64_t layer, int64_t n_rows);
  Status mla_attention(int64_t layer, std::span<const Segment> segments);

  const Model* model_ = nullptr;
  ThreadPool* pool_ = nullptr;
  DType kv_type_ = DType::F32;  // kv_cache.type
  bool graphs_enabled_ = true;  // device.cuda_graphs
  bool groups_experts_ = false;  // prefill's resident experts as grouped GEMMs (gemm_precision bf16)
  bool graphing_ = false;       // this step may be recorded: attention splits sized by capacity
  std::vector<int64_t> graph_key_;  // the shape last run (step_key) and, with graph_, recorded
  int64_t graph_launches_ = 0;
  std::unique_ptr<cuda::Context> context_;  // declared first: destroyed after what it allocated
  std::unique_ptr<Weights> weights_;
  std::unique_ptr<Buffers> buffers_;
  cuda::Graph graph_;  // declared last: destroyed before the buffers it uses
};

}  // namespace moenav
