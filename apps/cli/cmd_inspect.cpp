// `moenav inspect MODEL`: architecture, hyper-parameters, tensors with dtypes and sizes, and how
// the bytes split between experts and the rest (what an expert cache can take off the device).
#include <fmt/format.h>

#include "cli/options.h"
#include "model/model.h"

namespace moenav::cli {
namespace {

int run_inspect(const std::string& path, bool list_tensors) {
  auto loaded = load_model(path);
  if (!loaded.ok()) return fail(loaded.status());
  const Model& model = **loaded;
  const ModelConfig& c = model.config;
  fmt::print("model        {} ({})\n", model.path, model.format);
  fmt::print("architecture {}\n", c.arch);
  fmt::print("layers {}  hidden {}  heads {}/{} (head_dim {})  vocab {}  context {}\n", c.n_layers,
             c.hidden, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab, c.context_length);
  fmt::print("experts {} (top-{}, ffn {})  dense ffn {}  rope theta {}  norm eps {}\n", c.n_experts,
             c.n_experts_used, c.expert_ffn, c.dense_ffn, c.rope_theta, c.norm_eps);
  fmt::print("flags: qk_norm={} attention_bias={} norm_topk_prob={} tie_embeddings={}\n", c.qk_norm,
             c.attention_bias, c.norm_topk_prob, c.tie_embeddings);
  std::map<std::string, int64_t> bytes_by_dtype;
  for (const auto& [name, info] : model.tensors.tensors()) {
    bytes_by_dtype[std::string(dtype_name(info.view.dtype))] += info.bytes;
    if (list_tensors) {
      fmt::print("  {:<40} {:<5} {:<18} {:>10} B\n", name, dtype_name(info.view.dtype),
                 info.view.shape.to_string(), info.bytes);
    }
  }
  const int64_t total = model.total_bytes(), experts = model.expert_bytes();
  fmt::print("tensors {}  total {:.2f} MiB:", model.tensors.tensors().size(), total / 1048576.0);
  for (const auto& [dtype, bytes] : bytes_by_dtype) fmt::print(" {} {:.2f} MiB", dtype, bytes / 1048576.0);
  fmt::print("\nmemory plan: routed experts {:.2f} MiB ({:.1f}%), everything else {:.2f} MiB; one expert {:.1f} KiB\n",
             experts / 1048576.0, 100.0 * experts / total, (total - experts) / 1048576.0,
             c.n_experts > 0 && !model.weights.layers.empty() && !model.weights.layers[0].experts.empty()
                 ? model.weights.layers[0].experts[0].bytes() / 1024.0 : 0.0);
  return 0;
}

}  // namespace

void register_inspect(CLI::App& app, int& exit_code) {
  auto path = std::make_shared<std::string>();
  auto list = std::make_shared<bool>(true);
  CLI::App* command = app.add_subcommand("inspect", "Architecture, tensors, dtypes, sizes");
  command->add_option("model", *path, "Hugging Face model directory or .gguf file")->required();
  command->add_flag("!--no-tensors", *list, "Only the summary");
  command->callback([path, list, &exit_code] { exit_code = run_inspect(*path, *list); });
}

}  // namespace moenav::cli
