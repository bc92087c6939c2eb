// `moenav quantize MODEL -o out.gguf --type TYPE [--rule PATTERN=TYPE ...]`: a Hugging Face
// directory or a GGUF file written as a GGUF file with a type per tensor, chosen exactly as
// weights.type / weights.rules convert a model at load (model/weight_conversion.h). The output
// carries the tokenizer and metadata, in llama.cpp's names and layouts, and loads in moenav.
#include <fmt/format.h>

#include "cli/options.h"
#include "model/gguf_export.h"
#include "model/model.h"
#include "model/weight_conversion.h"

namespace moenav::cli {
namespace {

struct QuantizeOptions {
  std::string model;
  std::string output;
  std::string type;
  std::vector<std::string> rules;
};

int run_quantize(const QuantizeOptions& options) {
  auto plan = WeightTypePlan::create(options.type, options.rules);
  if (!plan.ok()) return fail(plan.status());
  auto model = load_model(options.model);
  if (!model.ok()) return fail(model.status());
  const Status written = export_gguf(**model, options.output, *plan);
  if (!written.ok()) return fail(written);
  fmt::print(stderr, "moenav: wrote {} ({}, {}{})\n", options.output, (*model)->arch->gguf_arch,
             options.type, options.rules.empty() ? "" : fmt::format(", {} rules", options.rules.size()));
  return 0;
}

}  // namespace

void register_quantize(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<QuantizeOptions>();
  CLI::App* command = app.add_subcommand("quantize", "Write a model as GGUF with per-tensor weight types");
  command->add_option("model", options->model, "Hugging Face model directory or .gguf file")->required();
  command->add_option("-o,--output", options->output, "GGUF file to write")->required();
  command->add_option("--type", options->type,
                      "Default weight type: f32, f16, bf16, q8_0, q4_0, q2_k, q3_k, q4_k, q5_k, q6_k "
                      "(routers stay f32; output q6_k under 2..5-bit types)")
      ->required();
  command->add_option("--rule", options->rules,
                      "PATTERN=TYPE, first match wins; PATTERN is a glob of canonical names "
                      "('blk.*.attn_*', '*exps*'), a substring, or router, experts, shared_experts, "
                      "attention, output, embedding");
  command->callback([options, &exit_code] { exit_code = run_quantize(*options); });
}

}  // namespace moenav::cli
