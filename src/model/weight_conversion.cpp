#include "model/weight_conversion.h"

#include <fnmatch.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "quant/quant.h"

namespace moenav {
namespace {

constexpr DType kWeightTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0,
                                  DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

// Names for groups of tensors, as globs over canonical names.
struct Alias {
  std::string_view name;
  std::string_view glob;
};
constexpr Alias kAliases[] = {
    {"router", "*.ffn_gate_inp*"},   // routers (and Qwen2-MoE's shared-expert gate)
    {"experts", "*_exps.*"},         // routed experts, stacked names
    {"shared_experts", "*_shexp.*"}, // shared experts
    {"attention", "blk.*.attn_*"},
    {"output", "output.weight"},     // LM head
    {"embedding", "token_embd.weight"},
};

bool has_glob(std::string_view pattern) {
  return pattern.find_first_of("*?[") != std::string_view::npos;
}

// The types a 2..5-bit mix stores the LM head in (llama.cpp keeps output.weight at q6_k).
bool is_low_bit(DType type) {
  return type == DType::Q4_0 || type == DType::Q2_K || type == DType::Q3_K ||
         type == DType::Q4_K || type == DType::Q5_K;
}

// The next type to try when rows of `cols` do not fill `type`'s blocks: k-quants fall back to
// the 32-element block type of at least their precision, 32-element types to 16-bit floats
// (the source's own when it is one).
DType fallback_type(DType type, DType current) {
  switch (type) {
    case DType::Q2_K: case DType::Q3_K: case DType::Q4_K: return DType::Q4_0;
    case DType::Q5_K: case DType::Q6_K: return DType::Q8_0;
    default: return current == DType::BF16 ? DType::BF16 : DType::F16;
  }
}

WeightTypeChoice fit_rows(DType wanted, int64_t cols, DType current) {
  DType type = wanted;
  while (!row_size_valid(type, cols)) type = fallback_type(type, current);
  if (type == wanted) return {type, ""};
  return {type, fmt::format("rows of {} elements do not fill {}'s blocks of {}: stored as {}", cols,
                            dtype_name(wanted), dtype_block_size(wanted), dtype_name(type))};
}

Expected<WeightTypeRule> parse_rule(std::string_view pattern, std::string_view type) {
  if (pattern.empty()) return Status::errorf("weights rule '={}': the pattern is empty", type);
  auto parsed = parse_weight_type(type);
  if (!parsed.ok()) return parsed.status().with_context(fmt::format("weights rule '{}'", pattern));
  return WeightTypeRule{std::string(pattern), *parsed};
}

// One tensor to convert: where it comes from and the buffer it goes to.
struct Conversion {
  std::string name;
  TensorView source;
  DType type;
  HostBuffer* destination;
};

// Encodes every conversion, tensors shared out among the hardware threads.
void run_conversions(std::vector<Conversion>& conversions) {
  std::atomic<size_t> next{0};
  auto work = [&] {
    std::vector<float> row;
    for (size_t i = next++; i < conversions.size(); i = next++) {
      const Conversion& conversion = conversions[i];
      const TensorView& source = conversion.source;
      const int64_t cols = source.cols();
      const int64_t row_bytes = dtype_bytes(conversion.type, cols);
      row.resize(static_cast<size_t>(cols));
      uint8_t* out = conversion.destination->data();
      for (int64_t r = 0; r < source.rows(); ++r) {
        quant::dequantize_row(source.dtype, source.row(r), row.data(), cols);
        quant::quantize_row(conversion.type, row.data(), out + r * row_bytes, cols);
      }
    }
  };
  const size_t n_threads = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, conversions.size());
  std::vector<std::thread> threads;
  for (size_t t = 1; t < n_threads; ++t) threads.emplace_back(work);
  work();
  for (std::thread& thread : threads) thread.join();
}

// "rows of 192 ... stored as q4_0" -> the tensors it applies to, printed once per note.
void print_notes(const std::map<std::string, std::set<std::string>>& notes) {
  for (const auto& [note, names] : notes) {
    fmt::print(stderr, "moenav: weights: {}{}: {}\n", *names.begin(),
               names.size() > 1 ? fmt::format(" and {} more", names.size() - 1) : "", note);
  }
}

}  // namespace

std::vector<TensorView*> matrix_views(ModelWeights& weights) {
  std::vector<TensorView*> views = {&weights.token_embedding, &weights.output};
  auto add_ffn = [&](FfnWeights& ffn) { views.insert(views.end(), {&ffn.gate, &ffn.up, &ffn.down}); };
  for (LayerWeights& layer : weights.layers) {
    views.insert(views.end(), {&layer.attn_q, &layer.attn_k, &layer.attn_v, &layer.attn_output,
                               &layer.router});
    MlaWeights& mla = layer.mla;
    views.insert(views.end(), {&mla.q_a, &mla.q_b, &mla.q, &mla.kv_a, &mla.k_b, &mla.v_b});
    for (FfnWeights& expert : layer.experts) add_ffn(expert);
    add_ffn(layer.shared_expert);
    add_ffn(layer.dense);
  }
  std::erase_if(views, [](const TensorView* view) { return view->empty(); });
  return views;
}

bool view_inside(const TensorView& view, const TensorView& tensor) {
  const auto* begin = static_cast<const uint8_t*>(tensor.data);
  const auto* data = static_cast<const uint8_t*>(view.data);
  return data >= begin && data < begin + tensor.bytes() && view.cols() == tensor.cols();
}

Expected<DType> parse_weight_type(std::string_view text) {
  const std::optional<DType> type = dtype_from_name(text);
  if (type && std::find(std::begin(kWeightTypes), std::end(kWeightTypes), *type) != std::end(kWeightTypes)) {
    return *type;
  }
  std::string list;
  for (DType choice : kWeightTypes) list += fmt::format("{}{}", list.empty() ? "" : ", ", dtype_name(choice));
  return Status::errorf("'{}' is not a weight type (choose one of: {})", text, list);
}

bool weight_pattern_matches(std::string_view pattern, std::string_view name) {
  auto glob = [&](std::string_view text) {
    return ::fnmatch(std::string(text).c_str(), std::string(name).c_str(), 0) == 0;
  };
  for (const Alias& alias : kAliases) {
    if (pattern == alias.name) return glob(alias.glob);
  }
  if (!has_glob(pattern)) return name.find(pattern) != std::string_view::npos;
  return glob(pattern);
}

std::string stacked_expert_name(std::string_view name) {
  // blk . L . kind . E . weight
  std::vector<std::string_view> parts;
  for (size_t begin = 0;;) {
    const size_t dot = name.find('.', begin);
    parts.push_back(name.substr(begin, dot == std::string_view::npos ? dot : dot - begin));
    if (dot == std::string_view::npos) break;
    begin = dot + 1;
  }
  auto is_number = [](std::string_view text) {
    return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  const bool per_expert = parts.size() == 5 && parts[0] == "blk" && is_number(parts[1]) &&
                          (parts[2] == "ffn_gate" || parts[2] == "ffn_up" || parts[2] == "ffn_down") &&
                          is_number(parts[3]);
  if (!per_expert) return std::string(name);
  return fmt::format("blk.{}.{}_exps.{}", parts[1], parts[2], parts[4]);
}

Expected<WeightTypePlan> WeightTypePlan::create(const WeightsConfig& config) {
  WeightTypePlan plan;
  if (!config.type.empty()) {
    auto type = parse_weight_type(config.type);
    if (!type.ok()) return type.status().with_context("weights.type");
    plan.default_type_ = *type;
  }
  for (const TypeRule& rule : config.rules) {
    MOENAV_ASSIGN_OR_RETURN(WeightTypeRule parsed, parse_rule(rule.match, rule.type));
    plan.rules_.push_back(std::move(parsed));
  }
  return plan;
}

Expected<WeightTypePlan> WeightTypePlan::create(std::string_view type,
                                                const std::vector<std::string>& rules) {
  WeightsConfig config;
  config.type = std::string(type);
  for (const std::string& rule : rules) {
    const size_t equals = rule.rfind('=');
    if (equals == std::string::npos) {
      return Status::errorf("--rule '{}': expected PATTERN=TYPE, e.g. 'experts=q4_k'", rule);
    }
    config.rules.push_back({rule.substr(0, equals), rule.substr(equals + 1)});
  }
  return create(config);
}

WeightTypeChoice WeightTypePlan::choose(std::string_view name, const Shape& shape, DType current) const {
  if (shape.rank < 2 || !name.ends_with(".weight")) return {DType::F32, ""};
  const std::string matched = stacked_expert_name(name);
  std::optional<DType> wanted;
  for (const WeightTypeRule& rule : rules_) {
    if (weight_pattern_matches(rule.pattern, matched)) {
      wanted = rule.type;
      break;
    }
  }
  if (!wanted) {
    if (!default_type_) return {current, ""};
    wanted = *default_type_;
    if (weight_pattern_matches("router", matched)) wanted = DType::F32;
    if (matched == "output.weight" && is_low_bit(*wanted)) wanted = DType::Q6_K;
  }
  return fit_rows(*wanted, shape[shape.rank - 1], current);
}

std::vector<uint8_t> encode_rows(DType type, const float* values, const Shape& shape) {
  const int64_t cols = shape.rank == 0 ? 1 : shape[shape.rank - 1];
  const int64_t row_bytes = dtype_bytes(type, cols);
  std::vector<uint8_t> bytes(static_cast<size_t>(dtype_bytes(type, shape.elements())));
  for (int64_t row = 0; row < shape.elements() / cols; ++row) {
    quant::quantize_row(type, values + row * cols, bytes.data() + row * row_bytes, cols);
  }
  return bytes;
}

Status convert_weights(Model& model, const WeightsConfig& config) {
  MOENAV_ASSIGN_OR_RETURN(WeightTypePlan plan, WeightTypePlan::create(config));
  if (plan.keeps_all()) return ok_status();
  std::vector<TensorView*> views = matrix_views(model.weights);
  // Index tensors the forward pass reads, with their new type.
  std::vector<Conversion> conversions;
  std::map<std::string, std::set<std::string>> notes;
  for (const auto& [name, info] : model.tensors.tensors()) {
    const bool used = std::any_of(views.begin(), views.end(),
                                  [&](const TensorView* view) { return view_inside(*view, info.view); });
    if (!used) continue;
    const WeightTypeChoice choice = plan.choose(name, info.view.shape, info.view.dtype);
    if (!choice.note.empty()) notes[choice.note].insert(stacked_expert_name(name));
    if (choice.type != info.view.dtype) conversions.push_back({name, info.view, choice.type, nullptr});
  }
  print_notes(notes);
  if (conversions.empty()) return ok_status();
  model.owned_tensors.reserve(model.owned_tensors.size() + conversions.size());  // keeps pointers
  for (Conversion& conversion : conversions) {
    conversion.destination =
        &model.owned_tensors.emplace_back(dtype_bytes(conversion.type, conversion.source.shape.elements()));
  }
  run_conversions(conversions);
  // Point the views and the index at the converted bytes; the mapping is no longer read.
  for (const Conversion& conversion : conversions) {
    TensorView converted = conversion.source;
    converted.dtype = conversion.type;
    converted.data = conversion.destination->data();
    for (TensorView* view : views) {
      if (!view_inside(*view, conversion.source)) continue;
      const int64_t offset = static_cast<const uint8_t*>(view->data) -
                             static_cast<const uint8_t*>(conversion.source.data);
      view->data = converted.row(offset / conversion.source.row_bytes());
      view->dtype = conversion.type;
    }
    TensorInfo info = *model.tensors.find(conversion.name);
    info.view = converted;
    info.bytes = converted.bytes();
    info.file = fmt::format("{} (converted to {} at load)", info.file, dtype_name(conversion.type));
    info.file_offset = -1;
    model.tensors.remove(conversion.name);
    MOENAV_RETURN_IF_ERROR(model.tensors.add_tensor(std::move(info)));
  }
  return ok_status();
}

}  // namespace moenav
