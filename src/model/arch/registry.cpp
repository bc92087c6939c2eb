// The list of known architectures: one line per architecture file.
#include <fmt/format.h>

#include "model/arch/architecture.h"

namespace moenav {

extern const Architecture kMixtral;
extern const Architecture kQwen2Moe;
extern const Architecture kQwen3Moe;
extern const Architecture kOlmoe;
extern const Architecture kDeepseekV2;
extern const Architecture kDeepseekV3;
extern const Architecture kGptOss;

// The first architecture with a GGUF name reads that name's files (deepseek2 holds V2 and V3).
const std::vector<const Architecture*>& architectures() {
  static const std::vector<const Architecture*> kAll = {
      &kMixtral, &kQwen2Moe, &kQwen3Moe, &kOlmoe, &kDeepseekV2, &kDeepseekV3, &kGptOss};
  return kAll;
}

const Architecture* find_architecture_by_hf_type(std::string_view model_type) {
  for (const Architecture* arch : architectures()) {
    if (arch->hf_model_type == model_type) return arch;
  }
  return nullptr;
}

const Architecture* find_architecture_by_gguf(std::string_view gguf_arch) {
  for (const Architecture* arch : architectures()) {
    if (arch->gguf_arch == gguf_arch) return arch;
  }
  return nullptr;
}

std::string supported_architectures() {
  std::string text;
  for (const Architecture* arch : architectures()) {
    text += fmt::format("{}{} (config.json model_type '{}', GGUF '{}')", text.empty() ? "" : ", ",
                        arch->name, arch->hf_model_type, arch->gguf_arch);
  }
  return text;
}

}  // namespace moenav
