// The CUDA backend's expert kernels on Mixtral-8x7B's shapes (hidden 4096, expert FFN 14336,
// 8 experts, top-2, Q4_0 weights), against bounds measured on the same device in the same run.
// One JSON line per case: median and best milliseconds per layer over --reps repetitions (each
// repetition runs 4 layers, 3.2 GB of expert weights, more than the L2 cache holds).
//   hbm_copy: a device-to-device copy of 1 GiB; read + write bytes per second bound every
//       decode case (fraction_of_hbm = the case's weight bytes per second over it).
//   decode_matvec: one token through one expert's three projections (gate and up in one
//       matmul_parts launch, then down; T = 1).
//   decode_qkv_one_launch, decode_qkv_three_launches: attention's q, k and v projections of one
//       token (Mixtral's shapes) in one launch, and one matmul each.
//   decode_selected: a decode step's two experts chosen on the device (selected_gate_up,
//       selected_down, combine_slots): two experts' weight bytes per layer.
//   gemm_ceiling: cuBLAS through matmul, bf16, [8192 x 8192] bf16 weights x 4096 tokens,
//       the weights' conversion copy included: the tensor-core rate the prefill cases compare to.
//   prefill_grouped: 512 tokens whose top-2 picks spread evenly (128 pairs an expert), every
//       expert in one launch per projection (grouped_gate_up, grouped_down; bf16 tensor cores,
//       weights dequantized in shared memory), then the slot-order combine.
//   prefill_per_expert_bf16, prefill_per_expert_f32: the same products expert by expert, as the
//       decoder runs cached experts: gather, matmul gate and up (dequantize to scratch, cuBLAS),
//       SiLU-mul, matmul down, weighted scatter.
//   Prefill cases report TFLOP/s (2 x 3 x FFN x hidden flops a pair) and weight bytes per second.
// --small shrinks every shape (hidden 256, FFN 512, 64 tokens) to run anywhere, the CUDA
// emulator included (a smoke test of the bench, not a measurement). Without a usable device it
// prints why and exits 0.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda.h"
#include "backend/cuda_ops.h"
#include "quant/quant.h"

namespace {

using moenav::DType;
using moenav::Status;
namespace cuda = moenav::cuda;

struct Shape {
  int64_t hidden = 4096, ffn = 14336, experts = 8, k = 2, layers = 4, prefill_tokens = 512;
  int64_t copy_bytes = int64_t{1} << 30, gemm_size = 8192, gemm_tokens = 4096;
};

struct Timing {
  double median_ms = 0.0, best_ms = 0.0;
};

[[noreturn]] void fail(const std::string& what, const Status& status) {
  std::fprintf(stderr, "bench_cuda_experts: %s: %s\n", what.c_str(), status.message().c_str());
  std::exit(1);
}

void check(const Status& status, const std::string& what) {
  if (!status.ok()) fail(what, status);
}

cuda::DeviceBuffer allocate(cuda::Context& context, int64_t bytes, const std::string& what) {
  auto buffer = context.allocate(bytes, what);
  if (!buffer.ok()) fail(what, Status::error(buffer.error()));
  return std::move(buffer).value();
}

template <typename T>
cuda::DeviceBuffer upload(cuda::Context& context, const std::vector<T>& host, const std::string& what) {
  const auto bytes = static_cast<int64_t>(host.size() * sizeof(T));
  cuda::DeviceBuffer buffer = allocate(context, bytes, what);
  check(context.upload(buffer, host.data(), bytes), what);
  return buffer;
}

// Milliseconds per call of `run` (queued work, then a wait for the device): one warm-up call,
// then `reps`.
Timing time_it(cuda::Context& context, int reps, const std::function<void()>& run) {
  run();
  check(context.synchronize(), "warm-up");
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    run();
    check(context.synchronize(), "run");
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return Timing{ms[ms.size() / 2], ms.front()};
}

// Random Q4_0 rows (every block's scale 0.002, so that the products stay finite).
std::vector<uint8_t> random_q4_0(int64_t rows, int64_t cols, uint32_t seed) {
  const int64_t row_bytes = moenav::dtype_bytes(DType::Q4_0, cols);
  std::vector<uint8_t> bytes(static_cast<size_t>(rows * row_bytes));
  std::mt19937 rng(seed);
  for (size_t i = 0; i + 4 <= bytes.size(); i += 4) {
    const uint32_t r = rng();
    std::memcpy(&bytes[i], &r, 4);
  }
  const uint16_t scale = moenav::quant::fp32_to_fp16(0.002f);
  for (size_t block = 0; block < bytes.size(); block += 18) std::memcpy(&bytes[block], &scale, 2);
  return bytes;
}

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(n);
  for (float& v : values) v = normal(rng);
  return values;
}

void print(const std::string& bench, const Timing& t, const std::string& fields) {
  std::printf("{\"bench\": \"%s\", \"median_ms\": %.4f, \"best_ms\": %.4f%s}\n", bench.c_str(), t.median_ms,
              t.best_ms, fields.c_str());
  std::fflush(stdout);
}

struct Layer {
  std::vector<cuda::DeviceBuffer> storage;  // the weights, then the tables
  std::vector<cuda::DeviceFfn> experts;
  cuda::ExpertTables tables;
};

}  // namespace

int main(int argc, char** argv) {
  Shape s;
  int reps = 10;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--small") {
      s = Shape{256, 512, 8, 2, 4, 64, int64_t{16} << 20, 256, 64};
    } else if (arg == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: bench_cuda_experts [--small] [--reps N]\n");
      return 2;
    }
  }
  if (const Status status = cuda::available(); !status.ok()) {
    std::printf("{\"bench\": \"skipped\", \"reason\": \"%s\"}\n", status.message().c_str());
    return 0;
  }
  auto created = cuda::Context::create(0, 0);
  if (!created.ok()) fail("context", Status::error(created.error()));
  cuda::Context& context = **created;
  if (auto info = cuda::device_info(); info.ok()) std::printf("{\"device\": \"%s\"}\n", info->name.c_str());

  // Bound: read + write bytes of a device-to-device copy.
  cuda::DeviceBuffer from = allocate(context, s.copy_bytes, "copy source");
  cuda::DeviceBuffer to = allocate(context, s.copy_bytes, "copy target");
  check(context.zero(from.data(), s.copy_bytes), "zero");
  const Timing copy = time_it(context, reps, [&] { check(context.copy(to.data(), from.data(), s.copy_bytes), "copy"); });
  const double hbm = 2.0 * static_cast<double>(s.copy_bytes) / (copy.best_ms * 1e6);
  print("hbm_copy", copy, ", \"bytes\": " + std::to_string(s.copy_bytes) + ", \"gb_per_s\": " + std::to_string(hbm));

  // The experts of `layers` layers, Q4_0, and their device tables.
  const int64_t matrix_bytes = s.ffn * moenav::dtype_bytes(DType::Q4_0, s.hidden);
  const std::vector<uint8_t> gate_up_bytes = random_q4_0(s.ffn, s.hidden, 1);
  const std::vector<uint8_t> down_bytes = random_q4_0(s.hidden, s.ffn, 2);
  std::vector<Layer> layers(static_cast<size_t>(s.layers));
  for (Layer& layer : layers) {
    std::vector<const void*> tables[3];
    for (int64_t e = 0; e < s.experts; ++e) {
      cuda::DeviceFfn ffn;
      ffn.gate = {DType::Q4_0, s.ffn, s.hidden, nullptr};
      ffn.up = ffn.gate;
      ffn.down = {DType::Q4_0, s.hidden, s.ffn, nullptr};
      for (cuda::DeviceWeight* w : {&ffn.gate, &ffn.up, &ffn.down}) {
        layer.storage.push_back(upload(context, w == &ffn.down ? down_bytes : gate_up_bytes, "expert weights"));
        w->data = layer.storage.back().data();
      }
      tables[0].push_back(ffn.gate.data), tables[1].push_back(ffn.up.data), tables[2].push_back(ffn.down.data);
      layer.experts.push_back(ffn);
    }
    layer.tables.gate = layer.experts.front().gate;
    layer.tables.up = layer.experts.front().up;
    layer.tables.down = layer.experts.front().down;
    const void* const** data[3] = {&layer.tables.gate_data, &layer.tables.up_data, &layer.tables.down_data};
    for (int i = 0; i < 3; ++i) {
      layer.storage.push_back(upload(context, tables[i], "expert table"));
      *data[i] = layer.storage.back().as<const void* const>();
    }
  }
  const double expert_bytes = 3.0 * static_cast<double>(matrix_bytes);
  const auto per = [](Timing t, double n) { return Timing{t.median_ms / n, t.best_ms / n}; };
  const auto per_layer = [&](Timing t) { return per(t, static_cast<double>(s.layers)); };
  auto bandwidth_fields = [&](double bytes, const Timing& t) {
    const double gbps = bytes / (t.best_ms * 1e6);
    return ", \"weight_bytes\": " + std::to_string(static_cast<int64_t>(bytes)) + ", \"gb_per_s\": " +
           std::to_string(gbps) + ", \"fraction_of_hbm\": " + std::to_string(gbps / hbm);
  };

  // Decode.
  const int64_t rows = std::max(s.prefill_tokens, s.k);
  cuda::DeviceBuffer x = upload(context, random_floats(static_cast<size_t>(rows * s.hidden), 3), "input");
  cuda::DeviceBuffer gate = allocate(context, rows * s.k * s.ffn * 4, "gate");
  cuda::DeviceBuffer up = allocate(context, rows * s.k * s.ffn * 4, "up");
  cuda::DeviceBuffer out = allocate(context, rows * s.k * s.hidden * 4, "expert output");
  cuda::DeviceBuffer combined = allocate(context, rows * s.hidden * 4, "output");
  const Timing matvec = per_layer(time_it(context, reps, [&] {
    for (Layer& layer : layers) {
      const cuda::DeviceFfn& f = layer.experts.front();
      const cuda::MatmulPart gate_up[] = {{f.gate, gate.as<float>()}, {f.up, up.as<float>()}};
      check(cuda::matmul_parts(context, gate_up, 2, x.as<float>(), 1), "matvec");
      check(cuda::matmul(context, f.down, gate.as<float>(), 1, out.as<float>()), "matvec");
    }
  }));
  print("decode_matvec", matvec, bandwidth_fields(expert_bytes, matvec));

  // Attention's q, k and v projections (hidden, hidden / 4 and hidden / 4 rows of hidden, as
  // Mixtral's), in one launch as the decoder runs them against one matmul each: what the
  // launches and the small matrices' partial waves cost. 8 copies, more than the L2 cache holds.
  {
    const int64_t q_rows = s.hidden, kv_rows = s.hidden / 4;
    const std::vector<uint8_t> q_bytes = random_q4_0(q_rows, s.hidden, 4), kv_bytes = random_q4_0(kv_rows, s.hidden, 5);
    std::vector<cuda::DeviceBuffer> storage;
    std::vector<std::array<cuda::MatmulPart, 3>> copies(8);
    for (std::array<cuda::MatmulPart, 3>& parts : copies) {
      for (int p = 0; p < 3; ++p) {
        storage.push_back(upload(context, p == 0 ? q_bytes : kv_bytes, "attention weights"));
        const int64_t rows = p == 0 ? q_rows : kv_rows;
        parts[static_cast<size_t>(p)].weight = {DType::Q4_0, rows, s.hidden, storage.back().data()};
      }
      parts[0].output = gate.as<float>(), parts[1].output = up.as<float>(), parts[2].output = out.as<float>();
    }
    const double bytes = static_cast<double>(q_bytes.size() + 2 * kv_bytes.size());
    const auto per_copy = [&](Timing t) { return per(t, static_cast<double>(copies.size())); };
    const Timing fused = per_copy(time_it(context, reps, [&] {
      for (const auto& parts : copies) check(cuda::matmul_parts(context, parts.data(), 3, x.as<float>(), 1), "qkv");
    }));
    print("decode_qkv_one_launch", fused, bandwidth_fields(bytes, fused));
    const Timing separate = per_copy(time_it(context, reps, [&] {
      for (const auto& parts : copies)
        for (const cuda::MatmulPart& part : parts)
          check(cuda::matmul(context, part.weight, x.as<float>(), 1, part.output), "qkv");
    }));
    print("decode_qkv_three_launches", separate, bandwidth_fields(bytes, separate));
  }

  cuda::DeviceBuffer selected = upload(context, std::vector<int32_t>{3, 6}, "selection");
  cuda::DeviceBuffer selected_weights = upload(context, std::vector<float>{0.6f, 0.4f}, "selection weights");
  const Timing decode = per_layer(time_it(context, reps, [&] {
    for (Layer& layer : layers) {
      cuda::SelectedExperts experts;
      experts.tables = layer.tables;
      experts.selected = selected.as<int32_t>();
      experts.n_pairs = s.k;
      experts.k = s.k;
      check(cuda::selected_gate_up(context, experts, x.as<float>(), cuda::GluArgs{}, gate.as<float>()), "selected");
      check(cuda::selected_down(context, experts, gate.as<float>(), out.as<float>()), "selected");
      check(cuda::combine_slots(context, out.as<float>(), selected_weights.as<float>(), 1, s.k, s.hidden,
                                combined.as<float>()), "combine");
    }
  }));
  print("decode_selected", decode, bandwidth_fields(static_cast<double>(s.k) * expert_bytes, decode));

  // Ceiling: cuBLAS bf16 through matmul.
  {
    const int64_t n = s.gemm_size;
    std::vector<uint16_t> weight(static_cast<size_t>(n * n), moenav::quant::fp32_to_bf16(0.01f));
    cuda::DeviceBuffer w = upload(context, weight, "gemm weight");
    cuda::DeviceBuffer input = allocate(context, s.gemm_tokens * n * 4, "gemm input");
    cuda::DeviceBuffer output = allocate(context, s.gemm_tokens * n * 4, "gemm output");
    check(context.zero(input.data(), s.gemm_tokens * n * 4), "zero");
    context.set_gemm_precision(cuda::GemmPrecision::Bf16);
    const cuda::DeviceWeight view{DType::BF16, n, n, w.data()};
    const Timing gemm = time_it(context, reps, [&] {
      check(cuda::matmul(context, view, input.as<float>(), s.gemm_tokens, output.as<float>()), "gemm");
    });
    const double tflops = 2.0 * static_cast<double>(n * n * s.gemm_tokens) / (gemm.best_ms * 1e9);
    print("gemm_ceiling", gemm, ", \"tflops\": " + std::to_string(tflops));
  }

  // Prefill: token t picks experts t % E and (t + 1) % E, pairs sorted by expert.
  const int64_t tokens = s.prefill_tokens, pairs = tokens * s.k;
  std::vector<int32_t> routes, pair_rows(static_cast<size_t>(pairs)), group_experts, group_first = {0};
  std::vector<float> route_weights;
  for (int64_t e = 0; e < s.experts; ++e) {
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t slot = 0; slot < s.k; ++slot) {
        if ((t + slot) % s.experts != e) continue;
        pair_rows[static_cast<size_t>(t * s.k + slot)] = static_cast<int32_t>(routes.size());
        routes.push_back(static_cast<int32_t>(t));
        route_weights.push_back(slot == 0 ? 0.6f : 0.4f);
      }
    }
    group_experts.push_back(static_cast<int32_t>(e));
    group_first.push_back(static_cast<int32_t>(routes.size()));
  }
  int64_t row_tiles = 0;
  for (int64_t e = 0; e < s.experts; ++e)
    row_tiles += cuda::grouped_row_tiles(group_first[static_cast<size_t>(e + 1)] - group_first[static_cast<size_t>(e)]);
  cuda::DeviceBuffer device_routes = upload(context, routes, "routes");
  cuda::DeviceBuffer device_weights = upload(context, route_weights, "route weights");
  cuda::DeviceBuffer device_pair_rows = upload(context, pair_rows, "pair rows");
  cuda::DeviceBuffer device_group_experts = upload(context, group_experts, "group experts");
  cuda::DeviceBuffer device_group_first = upload(context, group_first, "group firsts");
  cuda::DeviceBuffer grouped_input = allocate(context, pairs * s.hidden * 2, "grouped input");
  cuda::DeviceBuffer grouped_activated = allocate(context, pairs * s.ffn * 2, "grouped activations");
  const double flops = 2.0 * 3.0 * static_cast<double>(s.ffn * s.hidden * pairs);
  const double layer_bytes = static_cast<double>(s.experts) * expert_bytes;
  auto prefill_fields = [&](const Timing& t) {
    return ", \"tokens\": " + std::to_string(tokens) + ", \"tflops\": " + std::to_string(flops / (t.best_ms * 1e9)) +
           bandwidth_fields(layer_bytes, t);
  };

  const Timing grouped = per_layer(time_it(context, reps, [&] {
    for (Layer& layer : layers) {
      cuda::GroupedExperts experts;
      experts.tables = layer.tables;
      experts.group_experts = device_group_experts.as<int32_t>();
      experts.group_first = device_group_first.as<int32_t>();
      experts.n_groups = s.experts;
      experts.n_row_tiles = row_tiles;
      check(cuda::gather_rows_bf16(context, x.as<float>(), s.hidden, device_routes.as<int32_t>(), pairs,
                                   grouped_input.as<uint16_t>()), "gather");
      check(cuda::grouped_gate_up(context, experts, grouped_input.as<uint16_t>(), cuda::GluArgs{},
                                  grouped_activated.as<uint16_t>()), "grouped gate/up");
      check(cuda::grouped_down(context, experts, grouped_activated.as<uint16_t>(), out.as<float>()), "grouped down");
      check(cuda::combine_slots(context, out.as<float>(), device_weights.as<float>(), tokens, s.k, s.hidden,
                                combined.as<float>(), device_pair_rows.as<int32_t>()), "combine");
    }
  }));
  print("prefill_grouped", grouped, prefill_fields(grouped));

  for (const cuda::GemmPrecision precision : {cuda::GemmPrecision::Bf16, cuda::GemmPrecision::F32}) {
    context.set_gemm_precision(precision);
    const Timing per_expert = per_layer(time_it(context, reps, [&] {
      for (Layer& layer : layers) {
        check(context.zero(combined.data(), tokens * s.hidden * 4), "zero");
        for (int64_t e = 0; e < s.experts; ++e) {
          const int64_t first = group_first[static_cast<size_t>(e)], n = group_first[static_cast<size_t>(e + 1)] - first;
          const cuda::DeviceFfn& f = layer.experts[static_cast<size_t>(e)];
          const int32_t* rows_of = device_routes.as<int32_t>() + first;
          check(cuda::gather_rows(context, x.as<float>(), s.hidden, rows_of, n, out.as<float>()), "gather");
          check(cuda::matmul(context, f.gate, out.as<float>(), n, gate.as<float>()), "gate");
          check(cuda::matmul(context, f.up, out.as<float>(), n, up.as<float>()), "up");
          check(cuda::silu_mul(context, gate.as<float>(), up.as<float>(), gate.as<float>(), n * s.ffn), "silu");
          check(cuda::matmul(context, f.down, gate.as<float>(), n, up.as<float>()), "down");
          check(cuda::scatter_add_rows(context, up.as<float>(), s.hidden, rows_of, device_weights.as<float>() + first,
                                       n, combined.as<float>()), "scatter");
        }
      }
    }));
    print(precision == cuda::GemmPrecision::Bf16 ? "prefill_per_expert_bf16" : "prefill_per_expert_f32", per_expert,
          prefill_fields(per_expert));
  }
  return 0;
}
