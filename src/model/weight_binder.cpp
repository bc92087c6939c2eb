// Every weight the forward pass reads is looked up here once, by canonical name, and checked:
// present, of a dtype the kernels take, of the shape the configuration implies. The first problem
// found is reported with the file, the tensor, what was expected and what was found.
#include "model/weight_binder.h"

#include <fmt/format.h>

#include <map>

#include "quant/quant.h"

namespace moenav {
namespace {

bool is_matmul_dtype(DType type) {
  switch (type) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::Q8_0: case DType::Q4_0:
    case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: case DType::Q2_K: case DType::Q3_K:
      return true;
    default:
      return false;
  }
}

class Binder {
 public:
  explicit Binder(Model& model) : model_(model) {}

  Status status() const { return status_; }

  // A weight matrix [rows, cols] (any matmul dtype).
  TensorView matrix(const std::string& name, Shape expected) {
    const TensorInfo* info = find(name, /*optional=*/false);
    if (info == nullptr) return {};
    if (!is_matmul_dtype(info->view.dtype)) {
      fail("{}: tensor '{}' has dtype {}, which is not a supported weight type", info->file,
           source_name(*info), dtype_name(info->view.dtype));
      return {};
    }
    check_shape(*info, info->view.shape, expected);
    return info->view;
  }

  // A vector [n] converted to f32 (norm weights, biases); empty view if optional and absent.
  TensorView vector(const std::string& name, int64_t n, bool optional = false) {
    return f32_tensor(name, Shape{n}, optional);
  }

  // Any small float tensor converted to f32 (stacked expert biases [E, n]).
  TensorView f32_tensor(const std::string& name, Shape expected, bool optional = false) {
    const TensorInfo* info = find(name, optional);
    if (info == nullptr) return {};
    if (is_quantized(info->view.dtype) || !is_matmul_dtype(info->view.dtype)) {
      fail("{}: tensor '{}' has dtype {}, expected f32, f16 or bf16", info->file, source_name(*info),
           dtype_name(info->view.dtype));
      return {};
    }
    check_shape(*info, info->view.shape, expected);
    if (!status_.ok()) return {};
    std::vector<float>& values =
        model_.owned_f32.emplace_back(static_cast<size_t>(expected.elements()));
    quant::dequantize_row(info->view.dtype, info->view.data, values.data(), expected.elements());
    TensorView view;
    view.dtype = DType::F32;
    view.shape = expected;
    view.data = values.data();
    return view;
  }

  // One routed expert's bias: a per-expert vector, or a row of the stacked [E, n].
  TensorView expert_bias(int64_t layer, int64_t expert, const char* kind, int64_t n) {
    const std::string stacked = fmt::format("blk.{}.{}_exps.bias", layer, kind);
    if (model_.tensors.find(stacked)) {
      auto [it, inserted] = stacked_biases_.try_emplace(stacked);
      if (inserted) it->second = f32_tensor(stacked, {model_.config.n_experts, n});
      return status_.ok() ? it->second.slice(expert) : TensorView{};
    }
    return vector(fmt::format("blk.{}.{}.{}.bias", layer, kind, expert), n);
  }

  // One routed expert's matrix: a per-expert tensor, or a slice of the stacked [E, rows, cols].
  TensorView expert_matrix(int64_t layer, int64_t expert, const char* kind, Shape expected) {
    const std::string stacked = fmt::format("blk.{}.{}_exps.weight", layer, kind);
    if (const TensorInfo* info = model_.tensors.find(stacked)) {
      if (expert == 0) {
        Shape full{model_.config.n_experts, expected[0], expected[1]};
        if (!is_matmul_dtype(info->view.dtype)) {
          fail("{}: tensor '{}' has dtype {}, which is not a supported weight type", info->file,
               info->name, dtype_name(info->view.dtype));
        }
        check_shape(*info, info->view.shape, full);
      }
      return status_.ok() ? info->view.slice(expert) : TensorView{};
    }
    return matrix(fmt::format("blk.{}.{}.{}.weight", layer, kind, expert), expected);
  }

 private:
  template <typename... Args>
  void fail(fmt::format_string<Args...> format, Args&&... args) {
    if (status_.ok()) status_ = Status::errorf(format, std::forward<Args>(args)...);
  }

  const TensorInfo* find(const std::string& name, bool optional) {
    const TensorInfo* info = model_.tensors.find(name);
    if (info == nullptr && !optional) {
      fail("{}: missing tensor '{}' required by {} (n_layers={}, n_experts={})", model_.path, name,
           model_.config.arch, model_.config.n_layers, model_.config.n_experts);
    }
    return info;
  }

  std::string source_name(const TensorInfo& info) const { return info.name; }

  void check_shape(const TensorInfo& info, const Shape& found, const Shape& expected) {
    if (!(found == expected)) {
      fail("{}: tensor '{}' has shape {}, expected {} (hidden={}, heads={}/{}, head_dim={}, "
           "experts={}, expert_ffn={})",
           info.file, info.name, found.to_string(), expected.to_string(), model_.config.hidden,
           model_.config.n_heads, model_.config.n_kv_heads, model_.config.head_dim,
           model_.config.n_experts, model_.config.expert_ffn);
    }
  }

  Model& model_;
  Status status_;
  std::map<std::string, TensorView> stacked_biases_;  // f32 copies of [E, n] expert biases
};

Status check_config(const Model& model) {
  const ModelConfig& c = model.config;
  if (c.n_layers <= 0 || c.hidden <= 0 || c.vocab <= 0 || c.head_dim <= 0) {
    return Status::errorf("{}: invalid dimensions (layers={}, hidden={}, vocab={}, head_dim={})",
                          model.path, c.n_layers, c.hidden, c.vocab, c.head_dim);
  }
  for (int64_t layer = 0; layer < c.n_layers; ++layer) {
    if (!c.is_moe_layer(layer)) continue;
    if (c.n_experts <= 0 || c.n_experts_used <= 0 || c.n_experts_used > c.n_experts ||
        c.expert_ffn <= 0) {
      return Status::errorf("{}: invalid MoE settings (experts={}, experts per token={}, "
                            "expert ffn={})", model.path, c.n_experts, c.n_experts_used, c.expert_ffn);
    }
  }
  return ok_status();
}

// Attention: GQA projections (with optional norms, biases, sinks) or MLA's latent projections.
void bind_attention(Binder& bind, const ModelConfig& c, int64_t l, LayerWeights& layer) {
  auto name = [l](const char* role) { return fmt::format("blk.{}.{}", l, role); };
  if (c.attention == AttentionKind::Mla) {
    MlaWeights& mla = layer.mla;
    const int64_t q_rows = c.n_heads * (c.qk_nope_dim + c.qk_rope_dim);
    if (c.q_lora_rank > 0) {
      mla.q_a = bind.matrix(name("attn_q_a.weight"), {c.q_lora_rank, c.hidden});
      mla.q_a_norm = bind.vector(name("attn_q_a_norm.weight"), c.q_lora_rank);
      mla.q_b = bind.matrix(name("attn_q_b.weight"), {q_rows, c.q_lora_rank});
    } else {
      mla.q = bind.matrix(name("attn_q.weight"), {q_rows, c.hidden});
    }
    mla.kv_a =
        bind.matrix(name("attn_kv_a_mqa.weight"), {c.kv_lora_rank + c.qk_rope_dim, c.hidden});
    mla.kv_a_norm = bind.vector(name("attn_kv_a_norm.weight"), c.kv_lora_rank);
    mla.k_b = bind.matrix(name("attn_k_b.weight"), {c.n_heads, c.kv_lora_rank, c.qk_nope_dim});
    mla.v_b = bind.matrix(name("attn_v_b.weight"), {c.n_heads, c.v_head_dim, c.kv_lora_rank});
    layer.attn_output =
        bind.matrix(name("attn_output.weight"), {c.hidden, c.n_heads * c.v_head_dim});
    return;
  }
  layer.attn_q = bind.matrix(name("attn_q.weight"), {c.q_dim(), c.hidden});
  layer.attn_k = bind.matrix(name("attn_k.weight"), {c.kv_dim(), c.hidden});
  layer.attn_v = bind.matrix(name("attn_v.weight"), {c.kv_dim(), c.hidden});
  layer.attn_output = bind.matrix(name("attn_output.weight"), {c.hidden, c.q_dim()});
  if (c.qk_norm) {
    layer.attn_q_norm =
        bind.vector(name("attn_q_norm.weight"), c.qk_norm_full_width ? c.q_dim() : c.head_dim);
    layer.attn_k_norm =
        bind.vector(name("attn_k_norm.weight"), c.qk_norm_full_width ? c.kv_dim() : c.head_dim);
  }
  if (c.attention_bias) {
    layer.attn_q_bias = bind.vector(name("attn_q.bias"), c.q_dim());
    layer.attn_k_bias = bind.vector(name("attn_k.bias"), c.kv_dim());
    layer.attn_v_bias = bind.vector(name("attn_v.bias"), c.kv_dim());
  }
  if (c.attention_output_bias)
    layer.attn_output_bias = bind.vector(name("attn_output.bias"), c.hidden);
  if (c.attention_sinks) layer.attn_sinks = bind.vector(name("attn_sinks.weight"), c.n_heads);
}

// MoE: router (and its biases), routed experts, shared experts.
void bind_moe(Binder& bind, const ModelConfig& c, int64_t l, LayerWeights& layer) {
  auto name = [l](const char* role) { return fmt::format("blk.{}.{}", l, role); };
  layer.router = bind.matrix(name("ffn_gate_inp.weight"), {c.n_experts, c.hidden});
  if (c.router_bias) layer.router_bias = bind.vector(name("ffn_gate_inp.bias"), c.n_experts);
  if (c.expert_selection_bias) {
    layer.expert_selection_bias = bind.vector(name("exp_probs_b.bias"), c.n_experts);
  }
  layer.experts.resize(static_cast<size_t>(c.n_experts));
  for (int64_t e = 0; e < c.n_experts; ++e) {
    FfnWeights& expert = layer.experts[static_cast<size_t>(e)];
    expert.gate = bind.expert_matrix(l, e, "ffn_gate", {c.expert_ffn, c.hidden});
    expert.up = bind.expert_matrix(l, e, "ffn_up", {c.expert_ffn, c.hidden});
    expert.down = bind.expert_matrix(l, e, "ffn_down", {c.hidden, c.expert_ffn});
    if (c.expert_bias) {
      expert.gate_bias = bind.expert_bias(l, e, "ffn_gate", c.expert_ffn);
      expert.up_bias = bind.expert_bias(l, e, "ffn_up", c.expert_ffn);
      expert.down_bias = bind.expert_bias(l, e, "ffn_down", c.hidden);
    }
  }
  if (c.n_shared_experts > 0) {
    layer.shared_expert.gate =
        bind.matrix(name("ffn_gate_shexp.weight"), {c.shared_expert_ffn, c.hidden});
    layer.shared_expert.up =
        bind.matrix(name("ffn_up_shexp.weight"), {c.shared_expert_ffn, c.hidden});
    layer.shared_expert.down =
        bind.matrix(name("ffn_down_shexp.weight"), {c.hidden, c.shared_expert_ffn});
    if (c.shared_expert_gate) {
      layer.shared_expert_gate = bind.vector(name("ffn_gate_inp_shexp.weight"), c.hidden);
    }
  }
}

}  // namespace

Status bind_weights(Model& model) {
  MOENAV_RETURN_IF_ERROR(check_config(model));
  const ModelConfig& c = model.config;
  Binder bind(model);
  ModelWeights& w = model.weights;
  w.token_embedding = bind.matrix("token_embd.weight", {c.vocab, c.hidden});
  w.output_norm = bind.vector("output_norm.weight", c.hidden);
  w.output = model.tensors.find("output.weight") || !c.tie_embeddings
                 ? bind.matrix("output.weight", {c.vocab, c.hidden})
                 : w.token_embedding;
  w.layers.resize(static_cast<size_t>(c.n_layers));
  for (int64_t l = 0; l < c.n_layers && bind.status().ok(); ++l) {
    LayerWeights& layer = w.layers[static_cast<size_t>(l)];
    auto name = [l](const char* role) { return fmt::format("blk.{}.{}", l, role); };
    layer.attn_norm = bind.vector(name("attn_norm.weight"), c.hidden);
    bind_attention(bind, c, l, layer);
    // gpt-oss's GGUF calls the pre-FFN norm post_attention_norm.
    layer.ffn_norm = model.tensors.find(name("post_attention_norm.weight"))
                         ? bind.vector(name("post_attention_norm.weight"), c.hidden)
                         : bind.vector(name("ffn_norm.weight"), c.hidden);
    if (c.is_moe_layer(l)) {
      bind_moe(bind, c, l, layer);
    } else {
      layer.dense.gate = bind.matrix(name("ffn_gate.weight"), {c.dense_ffn, c.hidden});
      layer.dense.up = bind.matrix(name("ffn_up.weight"), {c.dense_ffn, c.hidden});
      layer.dense.down = bind.matrix(name("ffn_down.weight"), {c.hidden, c.dense_ffn});
    }
  }
  return bind.status();
}

}  // namespace moenav
