// Every weight the forward pass reads is looked up here once, by canonical name, and checked:
// present, of a dtype the kernels take, of the shape the configuration implies. The first problem
// found is reported with the file, the tensor, what was expected and what was found.
#include <fmt/format.h>

#include "model/weight_binder.h"
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
    const TensorInfo* info = find(name, optional);
    if (info == nullptr) return {};
    if (is_quantized(info->view.dtype) || !is_matmul_dtype(info->view.dtype)) {
      fail("{}: tensor '{}' has dtype {}, expected f32, f16 or bf16", info->file, source_name(*info),
           dtype_name(info->view.dtype));
      return {};
    }
    check_shape(*info, info->view.shape, Shape{n});
    if (!status_.ok()) return {};
    std::vector<float>& values = model_.owned_f32.emplace_back(static_cast<size_t>(n));
    quant::dequantize_row(info->view.dtype, info->view.data, values.data(), n);
    TensorView view;
    view.dtype = DType::F32;
    view.shape = Shape{n};
    view.data = values.data();
    return view;
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
    layer.attn_q = bind.matrix(name("attn_q.weight"), {c.q_dim(), c.hidden});
    layer.attn_k = bind.matrix(name("attn_k.weight"), {c.kv_dim(), c.hidden});
    layer.attn_v = bind.matrix(name("attn_v.weight"), {c.kv_dim(), c.hidden});
    layer.attn_output = bind.matrix(name("attn_output.weight"), {c.hidden, c.q_dim()});
    if (c.qk_norm) {
      layer.attn_q_norm = bind.vector(name("attn_q_norm.weight"), c.head_dim);
      layer.attn_k_norm = bind.vector(name("attn_k_norm.weight"), c.head_dim);
    }
    if (c.attention_bias) {
      layer.attn_q_bias = bind.vector(name("attn_q.bias"), c.q_dim());
      layer.attn_k_bias = bind.vector(name("attn_k.bias"), c.kv_dim());
      layer.attn_v_bias = bind.vector(name("attn_v.bias"), c.kv_dim());
    }
    layer.ffn_norm = bind.vector(name("ffn_norm.weight"), c.hidden);
    if (c.is_moe_layer(l)) {
      layer.router = bind.matrix(name("ffn_gate_inp.weight"), {c.n_experts, c.hidden});
      layer.experts.resize(static_cast<size_t>(c.n_experts));
      for (int64_t e = 0; e < c.n_experts; ++e) {
        FfnWeights& expert = layer.experts[static_cast<size_t>(e)];
        expert.gate = bind.expert_matrix(l, e, "ffn_gate", {c.expert_ffn, c.hidden});
        expert.up = bind.expert_matrix(l, e, "ffn_up", {c.expert_ffn, c.hidden});
        expert.down = bind.expert_matrix(l, e, "ffn_down", {c.hidden, c.expert_ffn});
      }
    } else {
      layer.dense.gate = bind.matrix(name("ffn_gate.weight"), {c.dense_ffn, c.hidden});
      layer.dense.up = bind.matrix(name("ffn_up.weight"), {c.dense_ffn, c.hidden});
      layer.dense.down = bind.matrix(name("ffn_down.weight"), {c.hidden, c.dense_ffn});
    }
  }
  return bind.status();
}

}  // namespace moenav
