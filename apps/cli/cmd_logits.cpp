// `moenav logits MODEL --input IDS.safetensors --out OUT.safetensors`: the hook for golden
// comparisons. Reads int tensor input_ids [batch, seq], writes float32 logits [batch, seq, vocab].
#include <fmt/format.h>

#include "cli/options.h"
#include "io/safetensors.h"

namespace moenav::cli {
namespace {

struct LogitsArgs {
  EngineOptions engine;
  std::string input;
  std::string output;
};

Expected<std::vector<int32_t>> read_input_ids(const std::string& path, Shape& shape) {
  WeightIndex index;
  MOENAV_RETURN_IF_ERROR(read_safetensors_file(path, index));
  const TensorInfo* info = index.find("input_ids");
  if (info == nullptr) return Status::errorf("{}: no tensor named 'input_ids'", path);
  const TensorView& view = info->view;
  if (view.shape.rank != 2 || (view.dtype != DType::I64 && view.dtype != DType::I32)) {
    return Status::errorf("{}: input_ids must be an I64 or I32 tensor [batch, seq], found {} {}",
                          path, dtype_name(view.dtype), view.shape.to_string());
  }
  shape = view.shape;
  std::vector<int32_t> ids(static_cast<size_t>(view.shape.elements()));
  for (size_t i = 0; i < ids.size(); ++i) {
    ids[i] = view.dtype == DType::I64 ? static_cast<int32_t>(static_cast<const int64_t*>(view.data)[i])
                                      : static_cast<const int32_t*>(view.data)[i];
  }
  return ids;
}

int run_logits(LogitsArgs& args) {
  Shape shape;
  auto ids = read_input_ids(args.input, shape);
  if (!ids.ok()) return fail(ids.status());
  std::unique_ptr<Engine> engine = open_engine(args.engine);
  if (!engine) return 1;
  const int64_t batch = shape[0], seq = shape[1], vocab = engine->vocab_size();
  std::vector<float> logits;
  logits.reserve(static_cast<size_t>(batch * seq * vocab));
  for (int64_t b = 0; b < batch; ++b) {
    auto session = engine->new_session();
    std::span<const int32_t> row(ids->data() + b * seq, static_cast<size_t>(seq));
    auto row_logits = engine->evaluate(*session, row, true);
    if (!row_logits.ok()) return fail(row_logits.status());
    logits.insert(logits.end(), row_logits->begin(), row_logits->end());
  }
  Status written = write_safetensors(args.output, {{"logits", DType::F32, Shape{batch, seq, vocab}, logits.data()}});
  if (!written.ok()) return fail(written);
  fmt::print(stderr, "wrote logits [{}, {}, {}] to {}\n", batch, seq, vocab, args.output);
  return 0;
}

}  // namespace

void register_logits(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<LogitsArgs>();
  CLI::App* command = app.add_subcommand("logits", "Write the logits of given token ids");
  add_engine_options(*command, args->engine);
  command->add_option("--input", args->input, "safetensors file with int tensor input_ids [batch, seq]")->required();
  command->add_option("--out", args->output, "Output safetensors file (float32 logits)")->required();
  command->callback([args, &exit_code] { exit_code = run_logits(*args); });
}

}  // namespace moenav::cli
