#!/usr/bin/env bash
# The CUDA backend's device checks in one run, for the GPU machine (Ubuntu 24.04, CUDA 13, no
# network, no cpp-httplib or SQLite): build what the checks need with CUDA, run the gpu-labelled
# tests, benchmark the embedded model and (BIG=1) the Mixtral-8x7B-shaped Q4_0 file of issue 7 on
# the GPU, under GPU budgets, with every expert on the CPU and on the CPU alone; (TUNE=1) tune it
# for issue 8's goal (min tpot under gpu_mem <= 16GiB) and bench the pick.
# Results go to $OUT (default out/gpu). Run there as: run(command="BIG=1 scripts/gpu_check.sh",
# carry=[".deps/debs", ".deps/tools"]). A session has 15 minutes of device time in all and a
# command 10: TESTS=0 skips the build's tests and the embedded model's benches for a second call.
# At most 8 files come back from $OUT: one call writes 7 (TESTS=1 BIG=1) or 8 (TESTS=0 TUNE=1).
# Prepare on a Debian machine (both folders are git-ignored; pass them with the run's carry):
#   mkdir -p .deps/debs && (cd .deps/debs && apt-get download libcpp-httplib-dev \
#     libcpp-httplib0.11 libsqlite3-dev libsqlite3-0 libssl-dev zlib1g-dev libbrotli-dev)
#   mkdir -p .deps/tools && cp ../shared/tools/make_synthetic_gguf.py .deps/tools/
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
jobs=$(nproc)

extra=()
if compgen -G ".deps/debs/*.deb" > /dev/null; then
  root=$PWD/.deps/root
  for deb in .deps/debs/*.deb; do dpkg -x "$deb" "$root"; done
  # Only the unpacked .pc files (cpp-httplib's Requires.private: openssl, zlib, brotli), their
  # paths rebased under the sysroot; the shared libraries they need at run time are Ubuntu's own.
  export PKG_CONFIG_SYSROOT_DIR=$root
  export PKG_CONFIG_LIBDIR=$root/usr/lib/x86_64-linux-gnu/pkgconfig:$root/usr/share/pkgconfig
  export LD_LIBRARY_PATH=$root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  extra+=(-DCMAKE_PREFIX_PATH="$root/usr")
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
# Only what the checks run: the command, the kernel bench and the gpu-labelled test programs.
targets=(moenav bench_cuda_experts test_cuda_ops test_cuda_experts test_cuda_dequantize test_cuda_emulator
         test_cuda_engine test_cuda_architectures)
if ! cmake --preset cuda-release "${extra[@]}" > "$OUT/configure.log" 2>&1 ||
   ! cmake --build build-cuda -j "$jobs" --target "${targets[@]}" > "$OUT/build.log" 2>&1; then
  echo "gpu_check: build failed"; tail -40 "$OUT/configure.log" "$OUT/build.log"; exit 1
fi
if [ "${TESTS:-1}" = 1 ]; then
  ctest --test-dir build-cuda -L gpu --output-on-failure -j 4 > "$OUT/ctest-gpu.log" 2>&1
  grep -E "tests passed|tests failed|\(Failed\)|\(Timeout\)" "$OUT/ctest-gpu.log"
  # The expert kernels on Mixtral-8x7B's shapes against the copy bandwidth and cuBLAS measured here.
  ./build-cuda/bench/bench_cuda_experts --reps 10 > "$OUT/kernels.jsonl" 2>> "$OUT/bench.log" ||
    echo "gpu_check: bench_cuda_experts failed"
  cat "$OUT/kernels.jsonl"
fi

bench() {  # name, then bench arguments; one JSON line per run in bench.jsonl, logs in bench.log
  local name=$1; shift
  echo "== $name: $*" >> "$OUT/bench.log"
  if json=$(./build-cuda/moenav bench "$@" --json 2>> "$OUT/bench.log"); then
    echo "{\"name\": \"$name\", \"result\": $json}" >> "$OUT/bench.jsonl"
  else
    echo "gpu_check: bench $name failed"; tail -5 "$OUT/bench.log"
  fi
}
if [ "${TESTS:-1}" = 1 ]; then
  bench tiny-cuda models/tiny-mixtral --backend cuda --prompt-tokens 512 --gen-tokens 128 --reps 5
  bench tiny-cuda-q8_0 models/tiny-mixtral --backend cuda --weights-type q8_0 --prompt-tokens 512 --gen-tokens 128 --reps 5
  bench tiny-cuda-cached models/tiny-mixtral --backend cuda --cache-size 2 --prompt-tokens 512 --gen-tokens 128 --reps 5
  # bf16 prefill: resident routed experts as grouped GEMMs (against f32 per-expert GEMMs above).
  bench tiny-cuda-bf16 models/tiny-mixtral --backend cuda --gemm-precision bf16 --prompt-tokens 512 --gen-tokens 128 --reps 5
  # A launch per kernel instead of one recorded graph per decode step: what the graphs save.
  bench tiny-cuda-no-graphs models/tiny-mixtral --backend cuda --cuda-graphs false --prompt-tokens 512 --gen-tokens 128 --reps 5
fi

big=/tmp/mixtral-8x7b-q4_0.gguf
if [ "${BIG:-0}" = 1 ] || [ "${TUNE:-0}" = 1 ]; then
  [ -f "$big" ] || python3 .deps/tools/make_synthetic_gguf.py --preset mixtral-8x7b --type q4_0 \
      --threads "$jobs" --out "$big" -q
fi
if [ "${BIG:-0}" = 1 ]; then
  # bf16 tensor-core prefill GEMMs (the prefill goals), the routed experts grouped; the f32
  # run's experts go one by one through cuBLAS. Decode is f32 matvec either way.
  bench mixtral-cuda "$big" --backend cuda --gemm-precision bf16 --prompt-tokens 512 \
      --gen-tokens 128 --reps 3
  bench mixtral-cuda-f32 "$big" --backend cuda --gemm-precision f32 --prompt-tokens 512 \
      --gen-tokens 16 --reps 3
  bench mixtral-cuda-no-graphs "$big" --backend cuda --cuda-graphs false --prompt-tokens 16 \
      --gen-tokens 64 --reps 3
  # Under a budget: misses split between PCIe and the CPU, next-layer experts prefetched on the
  # copy stream; one pool of slots for all layers (the budget's whole remainder, not a multiple
  # of the layer count).
  for budget in 24GiB 16GiB 8GiB; do
    bench "mixtral-cuda-$budget" "$big" --backend cuda --gpu-memory "$budget" --cache-size auto --cache-scope global \
        --miss-policy auto --prefetch next_layer_gate --gemm-precision bf16 \
        --prompt-tokens 512 --gen-tokens 128 --reps 3
  done
  # What auto chooses from, one policy at a time at 16 GiB (decode; a short prompt).
  for miss in fetch cpu split; do
    bench "mixtral-cuda-16GiB-$miss" "$big" --backend cuda --gpu-memory 16GiB --cache-size auto \
        --miss-policy "$miss" --prompt-tokens 16 --gen-tokens 64 --reps 3
  done
  # Every expert on the CPU, the rest on the GPU (llama.cpp's --cpu-moe, 2.0 GB there), and the
  # CPU alone with every core (issue 7's CPU-only goal); shorter, the CPU's prefill is slow.
  bench mixtral-cuda-experts-on-cpu "$big" --backend cuda --cache-size 0 --miss-policy cpu \
      --prompt-tokens 64 --gen-tokens 64 --reps 3
  bench mixtral-cpu "$big" --backend cpu --prompt-tokens 64 --gen-tokens 64 --reps 3
  # The same from the file mapping's 4 KiB pages instead of huge-page copies (weights.load).
  bench mixtral-cpu-mmap "$big" --backend cpu --weights-load mmap --prompt-tokens 8 --gen-tokens 32 --reps 1
fi
if [ "${TUNE:-0}" = 1 ]; then  # issue 8 on the GPU: within 20 minutes, TPOT against llama.cpp's 22.3 tokens/s
  start=$SECONDS
  # As the issue writes it: the gpu_mem goal moves the search to the GPU with the bound as budget.
  ./build-cuda/moenav tune "$big" \
      --objective "min tpot" --constraint "gpu_mem <= 16GiB" --budget-minutes "${TUNE_MINUTES:-6}" \
      --db /tmp/moenav-tune.db -o "$OUT/tuned.json" --report "$OUT/tune-report.html" -q > "$OUT/tune.log" 2>&1 ||
    echo "gpu_check: tune failed"
  echo "gpu_check: tune took $((SECONDS - start)) s"
  tail -40 "$OUT/tune.log"
  [ -f "$OUT/tuned.json" ] && bench mixtral-tuned "$big" --config "$OUT/tuned.json" --prompt-tokens 512 \
      --gen-tokens 128 --reps 3
fi
[ -f "$OUT/bench.jsonl" ] && cat "$OUT/bench.jsonl"
ls -la "$OUT"
