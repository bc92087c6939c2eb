#include "tune/fingerprint.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "model/model.h"

namespace moenav::tune {
namespace {

std::string read_small_file(const std::string& path) {
  std::ifstream stream(path, std::ios::binary);
  std::ostringstream text;
  if (stream) text << stream.rdbuf();
  return text.str();
}

// The first "key : value" line of a /proc file whose key starts with `key`.
std::string proc_field(const std::string& path, std::string_view key) {
  std::istringstream lines(read_small_file(path));
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(key, 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(value.begin());
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.pop_back();
    return value;
  }
  return "";
}

// NVIDIA GPUs the kernel driver lists (no CUDA needed to read them).
std::vector<std::string> gpu_models() {
  std::vector<std::string> models;
  const std::filesystem::path root = "/proc/driver/nvidia/gpus";
  std::error_code error;
  if (!std::filesystem::exists(root, error)) return models;
  for (const auto& entry : std::filesystem::directory_iterator(root, error)) {
    const std::string model = proc_field((entry.path() / "information").string(), "Model");
    if (!model.empty()) models.push_back(model);
  }
  std::sort(models.begin(), models.end());
  return models;
}

}  // namespace

std::string hash_text(std::string_view text) {
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return fmt::format("{:016x}", hash);
}

Fingerprint model_fingerprint(const Engine& engine) {
  const Model& model = engine.model();
  const ModelConfig& c = model.config;
  std::string index = fmt::format("{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}\n", c.arch, c.n_layers, c.hidden, c.n_heads,
                                  c.n_kv_heads, c.head_dim, c.vocab, c.n_experts, c.n_experts_used,
                                  c.expert_ffn, c.rope_theta);
  if (model.format == "safetensors") index += read_small_file(model.path + "/config.json");
  int64_t bytes = 0;
  for (const auto& [name, info] : model.tensors.tensors()) {
    index += fmt::format("{}|{}|{}|{}|{}\n", name, dtype_name(info.view.dtype), info.view.shape.to_string(),
                         info.file_offset, info.bytes);
    bytes += info.bytes;
  }
  Fingerprint fingerprint;
  fingerprint.key = hash_text(index);
  fingerprint.description = {{"path", model.path},
                             {"format", model.format},
                             {"arch", c.arch},
                             {"layers", c.n_layers},
                             {"hidden", c.hidden},
                             {"experts", c.n_experts},
                             {"experts_per_token", c.n_experts_used},
                             {"tensors", model.tensors.tensors().size()},
                             {"bytes", bytes}};
  return fingerprint;
}

Fingerprint hardware_fingerprint() {
  std::string cpu = proc_field("/proc/cpuinfo", "model name");
  if (cpu.empty()) cpu = proc_field("/proc/cpuinfo", "Processor");
  const std::string flags = proc_field("/proc/cpuinfo", "flags");
  const unsigned cores = std::thread::hardware_concurrency();
  // MemTotal in GiB, rounded: the kernel's figure wobbles by a few MiB between boots.
  const double memory_kib = std::strtod(proc_field("/proc/meminfo", "MemTotal").c_str(), nullptr);
  const int64_t memory_gib = static_cast<int64_t>(std::llround(memory_kib / 1048576.0));
  const std::vector<std::string> gpus = gpu_models();
  Fingerprint fingerprint;
  fingerprint.description = {{"cpu", cpu},
                             {"cores", cores},
                             {"memory_gib", memory_gib},
                             {"gpus", gpus},
                             {"cpu_flags_hash", hash_text(flags)}};
  fingerprint.key = hash_text(fingerprint.description.dump());
  return fingerprint;
}

}  // namespace moenav::tune
