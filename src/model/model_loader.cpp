// Loading: detect the format, parse the configuration through the architecture's hooks, map
// checkpoint names to canonical names, then bind and validate every tensor (weight_binder.cpp).
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "io/safetensors.h"
#include "model/model.h"
#include "model/weight_binder.h"

namespace moenav {
namespace {

namespace fs = std::filesystem;

Expected<nlohmann::json> read_json_file(const std::string& path) {
  std::ifstream stream(path);
  if (!stream) return Status::errorf("{}: cannot open", path);
  nlohmann::json json = nlohmann::json::parse(stream, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return Status::errorf("{}: not a valid JSON object", path);
  }
  return json;
}

// Buffers HF checkpoints carry that are not weights.
bool is_ignored_tensor(const std::string& name) {
  return name.ends_with("rotary_emb.inv_freq");
}

Status load_hf_directory(const std::string& directory, Model& model) {
  const std::string config_path = directory + "/config.json";
  MOENAV_ASSIGN_OR_RETURN(nlohmann::json config, read_json_file(config_path));
  const std::string model_type = config.value("model_type", std::string());
  model.arch = find_architecture_by_hf_type(model_type);
  if (model.arch == nullptr) {
    return Status::errorf("{}: unknown architecture model_type '{}'; supported: {}", config_path,
                          model_type, supported_architectures());
  }
  model.config.arch = std::string(model.arch->name);
  MOENAV_RETURN_IF_ERROR(parse_common_hf_config(config, model.config).with_context(config_path));
  MOENAV_RETURN_IF_ERROR(model.arch->parse_hf(config, model.config).with_context(config_path));

  MOENAV_ASSIGN_OR_RETURN(WeightIndex source, read_safetensors_dir(directory));
  for (const auto& file : source.files()) model.tensors.add_file(file);
  for (const auto& [name, info] : source.tensors()) {
    if (is_ignored_tensor(name)) continue;
    std::optional<std::string> canonical = translate_name(name, model.arch->hf_names);
    if (!canonical) {
      return Status::errorf("{}: tensor '{}' is not part of a {} checkpoint", info.file, name,
                            model.arch->name);
    }
    TensorInfo renamed = info;
    renamed.name = *canonical;
    MOENAV_RETURN_IF_ERROR(model.tensors.add_tensor(std::move(renamed)));
  }
  if (model.arch->derive_hf_tensors) MOENAV_RETURN_IF_ERROR(model.arch->derive_hf_tensors(model));
  model.format = "safetensors";
  return ok_status();
}

Status load_gguf_file(const std::string& path, Model& model) {
  MOENAV_ASSIGN_OR_RETURN(GgufFile file, GgufFile::open(path));
  model.gguf = std::make_shared<GgufFile>(std::move(file));
  const std::string gguf_arch = model.gguf->get_string("general.architecture").value_or("");
  model.arch = find_architecture_by_gguf(gguf_arch);
  if (model.arch == nullptr) {
    return Status::errorf("{}: unknown architecture general.architecture '{}'; supported: {}", path,
                          gguf_arch, supported_architectures());
  }
  model.config.arch = std::string(model.arch->name);
  MOENAV_RETURN_IF_ERROR(parse_common_gguf_config(*model.gguf, gguf_arch, model.config));
  MOENAV_RETURN_IF_ERROR(model.arch->parse_gguf(*model.gguf, model.config));
  model.tensors = model.gguf->weights();
  model.format = "gguf";
  return ok_status();
}

}  // namespace

int64_t Model::total_bytes() const {
  int64_t total = 0;
  for (const auto& [name, info] : tensors.tensors()) total += info.bytes;
  return total;
}

int64_t Model::expert_bytes() const {
  int64_t total = 0;
  for (const LayerWeights& layer : weights.layers) {
    for (const FfnWeights& expert : layer.experts) total += expert.bytes();
  }
  return total;
}

Expected<std::unique_ptr<Model>> load_model(const std::string& path) {
  auto model = std::make_unique<Model>();
  model->path = path;
  std::error_code error;
  if (fs::is_directory(path, error)) {
    if (!fs::exists(path + "/config.json")) {
      return Status::errorf("{}: no config.json in this directory (expected a Hugging Face model "
                            "directory or a .gguf file)", path);
    }
    MOENAV_RETURN_IF_ERROR(load_hf_directory(path, *model));
  } else if (fs::is_regular_file(path, error)) {
    MOENAV_RETURN_IF_ERROR(load_gguf_file(path, *model));
  } else {
    return Status::errorf("{}: no such file or directory", path);
  }
  MOENAV_RETURN_IF_ERROR(bind_weights(*model));
  return model;
}

}  // namespace moenav
