#include "model/gguf_export.h"

#include <fmt/format.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "io/gguf.h"
#include "model/derived_tensors.h"
#include "quant/quant.h"

namespace moenav {
namespace {

// llama_ftype of the file's dominant type (general.file_type).
int file_type(DType type) {
  switch (type) {
    case DType::F32:
      return 0;
    case DType::F16:
      return 1;
    case DType::Q8_0:
      return 7;
    case DType::BF16:
      return 32;
    case DType::Q4_0:
      return 2;
    case DType::Q2_K:
      return 10;
    case DType::Q3_K:  // the _M mixes: llama.cpp's names for a k-quant default
      return 12;
    case DType::Q4_K:
      return 15;
    case DType::Q5_K:
      return 17;
    case DType::Q6_K:
      return 18;
    default:
      return 0;
  }
}

// A tensor to write: name, shape and f32 values in GGUF layout, and its type in the source.
struct PendingTensor {
  std::string name;
  Shape shape;
  std::vector<float> values;
  DType source = DType::F32;
  DType type = DType::F32;         // chosen by the plan
  std::vector<uint8_t> encoded{};  // values as `type`, what add_tensor points to
};

// Per-expert Hugging Face tensors "blk.L.ffn_gate.E.weight" become one stacked
// "blk.L.ffn_gate_exps.weight" [E, rows, cols], as llama.cpp writes MoE layers.
std::vector<PendingTensor> collect_tensors(const Model& model) {
  static const std::regex kPerExpert(R"(blk\.(\d+)\.(ffn_gate|ffn_up|ffn_down)\.(\d+)\.weight)");
  std::vector<PendingTensor> pending;
  std::map<std::string, std::vector<const TensorInfo*>> stacks;  // stacked name -> experts in order
  for (const auto& [name, info] : model.tensors.tensors()) {
    std::smatch match;
    if (std::regex_match(name, match, kPerExpert)) {
      auto& experts = stacks[fmt::format("blk.{}.{}_exps.weight", match[1].str(), match[2].str())];
      const size_t index = std::stoul(match[3].str());
      if (experts.size() <= index) experts.resize(index + 1, nullptr);
      experts[index] = &info;
      continue;
    }
    pending.push_back({name, info.view.shape, tensor_to_f32(info.view), info.view.dtype});
  }
  for (auto& [name, experts] : stacks) {
    PendingTensor stacked{name, {}, {}, experts.front()->view.dtype};
    const Shape& one = experts.front()->view.shape;
    stacked.shape = Shape{static_cast<int64_t>(experts.size()), one[0], one[1]};
    for (const TensorInfo* expert : experts) {
      const std::vector<float> values = tensor_to_f32(expert->view);
      stacked.values.insert(stacked.values.end(), values.begin(), values.end());
    }
    pending.push_back(std::move(stacked));
  }
  return pending;
}

// tokenizer.json (byte-level BPE) -> tokenizer.ggml.* as llama.cpp's gpt2 vocabulary.
Status write_tokenizer(const Model& model, GgufWriter& writer) {
  const std::string path = model.path + "/tokenizer.json";
  if (!std::filesystem::exists(path)) return ok_status();
  std::ifstream stream(path);
  const nlohmann::json json = nlohmann::json::parse(stream, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.contains("model") || json["model"].value("type", "") != "BPE" ||
      !json["model"].contains("vocab") || !json["model"]["vocab"].is_object()) {
    return Status::errorf("{}: only byte-level BPE tokenizers are converted", path);
  }
  std::vector<std::string> tokens(static_cast<size_t>(model.config.vocab));
  std::vector<int32_t> types(tokens.size(), 1);  // 1 normal, 3 control, 4 user-defined
  std::vector<bool> present(tokens.size(), false);
  auto place = [&](int64_t id, const std::string& text, int32_t type) -> Status {
    if (id < 0 || id >= model.config.vocab) {
      return Status::errorf("{}: token id {} is outside the model's vocabulary {}", path, id,
                            model.config.vocab);
    }
    tokens[static_cast<size_t>(id)] = text;
    types[static_cast<size_t>(id)] = type;
    present[static_cast<size_t>(id)] = true;
    return ok_status();
  };
  for (const auto& [text, id] : json["model"]["vocab"].items())
    MOENAV_RETURN_IF_ERROR(place(id.get<int64_t>(), text, 1));
  for (const auto& added : json.value("added_tokens", nlohmann::json::array())) {
    MOENAV_RETURN_IF_ERROR(place(added.value("id", int64_t{-1}), added.value("content", ""),
                                 added.value("special", false) ? 3 : 4));
  }
  for (size_t id = 0; id < tokens.size(); ++id) {
    if (!present[id]) {  // llama.cpp pads the vocabulary to the embedding rows
      tokens[id] = fmt::format("[PAD{}]", id);
      types[id] = 4;
    }
  }
  std::vector<std::string> merges;
  for (const auto& merge : json["model"].value("merges", nlohmann::json::array())) {
    merges.push_back(merge.is_string()
                         ? merge.get<std::string>()
                         : merge[0].get<std::string>() + " " + merge[1].get<std::string>());
  }
  writer.set_string("tokenizer.ggml.model", "gpt2");
  writer.set_string("tokenizer.ggml.pre", "gpt-2");
  writer.set_string_array("tokenizer.ggml.tokens", tokens);
  writer.set_int32_array("tokenizer.ggml.token_type", types);
  writer.set_string_array("tokenizer.ggml.merges", merges);
  return ok_status();
}

// Encodes every tensor as its chosen type, tensors shared out among the hardware threads
// (k-quant searches are slow).
void encode_tensors(std::vector<PendingTensor>& pending) {
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < pending.size(); i = next++) {
      PendingTensor& tensor = pending[i];
      tensor.encoded = encode_rows(tensor.type, tensor.values.data(), tensor.shape);
      std::vector<float>().swap(tensor.values);
    }
  };
  std::vector<std::thread> threads;
  for (unsigned t = 1; t < std::thread::hardware_concurrency(); ++t) threads.emplace_back(work);
  work();
  for (std::thread& thread : threads) thread.join();
}

// A GGUF source keeps its metadata (tokenizer, chat template, hyper-parameters) as it was.
void copy_gguf_metadata(const GgufFile& source, GgufWriter& writer) {
  for (const std::string& key : source.metadata_keys()) {
    if (key == "general.file_type" || key == "general.quantization_version") continue;
    writer.set_value(key, source.metadata().at(key));
  }
}

}  // namespace

Status export_gguf(const Model& model, const std::string& path, DType type) {
  if (type != DType::F32 && type != DType::F16 && type != DType::BF16 && type != DType::Q8_0) {
    return Status::errorf("convert: --type {} is not supported (f32, f16, bf16, q8_0)",
                          dtype_name(type));
  }
  if (model.format != "safetensors") {
    return Status::errorf("{}: convert reads Hugging Face directories (this is {})", model.path,
                          model.format);
  }
  MOENAV_ASSIGN_OR_RETURN(WeightTypePlan plan, WeightTypePlan::create(dtype_name(type), {}));
  return export_gguf(model, path, plan);
}

Status export_gguf(const Model& model, const std::string& path, const WeightTypePlan& plan) {
  const ModelConfig& config = model.config;
  const bool from_gguf = model.gguf != nullptr;  // already in llama.cpp's names and layouts
  GgufWriter writer;
  if (from_gguf) {
    copy_gguf_metadata(*model.gguf, writer);
  } else {
    write_common_gguf_config(config, model.arch->gguf_arch, writer);
    writer.set_string("general.name", std::filesystem::path(model.path).filename().string());
    if (model.arch->write_gguf) model.arch->write_gguf(config, writer);
    MOENAV_RETURN_IF_ERROR(write_tokenizer(model, writer));
  }
  writer.set_uint32("general.file_type", static_cast<uint32_t>(file_type(plan.default_type())));
  writer.set_uint32("general.quantization_version", 2);

  std::vector<PendingTensor> pending = collect_tensors(model);
  std::map<std::string, std::vector<std::string>> notes;  // fallback note -> tensors
  for (PendingTensor& tensor : pending) {
    if (model.arch->to_gguf_layout && !from_gguf)
      model.arch->to_gguf_layout(config, tensor.name, tensor.shape, tensor.values);
    const WeightTypeChoice choice = plan.choose(tensor.name, tensor.shape, tensor.source);
    if (!choice.note.empty()) notes[choice.note].push_back(tensor.name);
    tensor.type = choice.type;
  }
  for (const auto& [note, names] : notes) {
    fmt::print(stderr, "moenav: {}{}: {}\n", names.front(),
               names.size() > 1 ? fmt::format(" and {} more", names.size() - 1) : "", note);
  }
  encode_tensors(pending);
  for (const PendingTensor& tensor : pending) {
    writer.add_tensor(tensor.name, tensor.type, tensor.shape, tensor.encoded.data());
  }
  return writer.write(path);
}

}  // namespace moenav
