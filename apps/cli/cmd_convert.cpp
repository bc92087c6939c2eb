// `moenav convert MODEL_DIR -o out.gguf --type f32|f16|bf16|q8_0`: a Hugging Face checkpoint to
// the GGUF file llama.cpp's converter would write (names, metadata, layouts, tokenizer), which
// moenav and llama.cpp both load.
#include <fmt/format.h>

#include "cli/options.h"
#include "model/gguf_export.h"
#include "model/model.h"

namespace moenav::cli {
namespace {

int run_convert(const std::string& path, const std::string& output, const std::string& type_name) {
  const std::optional<DType> type = dtype_from_name(type_name);
  if (!type)
    return fail(Status::errorf("--type '{}' is not a type (f32, f16, bf16, q8_0)", type_name));
  auto model = load_model(path);
  if (!model.ok()) return fail(model.status());
  const Status written = export_gguf(**model, output, *type);
  if (!written.ok()) return fail(written);
  fmt::print(stderr, "moenav: wrote {} ({}, {} {})\n", output, (*model)->arch->gguf_arch,
             (*model)->config.arch, type_name);
  return 0;
}

}  // namespace

void register_convert(CLI::App& app, int& exit_code) {
  auto path = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  auto type = std::make_shared<std::string>("f16");
  CLI::App* command =
      app.add_subcommand("convert", "Hugging Face directory to GGUF (llama.cpp layout)");
  command->add_option("model", *path, "Hugging Face model directory")->required();
  command->add_option("-o,--output", *output, "GGUF file to write")->required();
  command->add_option("--type", *type, "Weight type: f32, f16, bf16 or q8_0")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0"}));
  command->callback(
      [path, output, type, &exit_code] { exit_code = run_convert(*path, *output, *type); });
}

}  // namespace moenav::cli
