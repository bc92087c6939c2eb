#!/usr/bin/env bash
# The CUDA backend's device checks in one run, for the GPU machine (Ubuntu 24.04, CUDA 13, no
# network, no cpp-httplib or SQLite): build with CUDA, run the gpu-labelled tests, benchmark the
# embedded model and (BIG=1) the Mixtral-8x7B-shaped Q4_0 file of issue 7 on the GPU.
# Results go to $OUT (default out/gpu). Run there as: run(command="scripts/gpu_check.sh",
# carry=[".deps/debs", ".deps/tools"]), BIG=1 for the 26 GB model (minutes to write).
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
if ! cmake --preset cuda-release "${extra[@]}" > "$OUT/configure.log" 2>&1 ||
   ! cmake --build build-cuda -j "$jobs" > "$OUT/build.log" 2>&1; then
  echo "gpu_check: build failed"; tail -40 "$OUT/configure.log" "$OUT/build.log"; exit 1
fi
ctest --test-dir build-cuda -L gpu --output-on-failure -j 4 > "$OUT/ctest-gpu.log" 2>&1
grep -E "tests passed|tests failed|\(Failed\)|\(Timeout\)" "$OUT/ctest-gpu.log"

# The expert kernels on Mixtral-8x7B's shapes against the copy bandwidth and cuBLAS measured here.
./build-cuda/bench/bench_cuda_experts --reps 10 > "$OUT/kernels.jsonl" 2>> "$OUT/bench.log" ||
  echo "gpu_check: bench_cuda_experts failed"
cat "$OUT/kernels.jsonl"

bench() {  # name, then bench arguments; one JSON line per run in bench.jsonl, logs in bench.log
  local name=$1; shift
  echo "== $name: $*" >> "$OUT/bench.log"
  if json=$(./build-cuda/moenav bench "$@" --json 2>> "$OUT/bench.log"); then
    echo "{\"name\": \"$name\", \"result\": $json}" >> "$OUT/bench.jsonl"
  else
    echo "gpu_check: bench $name failed"; tail -5 "$OUT/bench.log"
  fi
}
bench tiny-cuda models/tiny-mixtral --backend cuda --prompt-tokens 512 --gen-tokens 128 --reps 5
bench tiny-cuda-q8_0 models/tiny-mixtral --backend cuda --weights-type q8_0 --prompt-tokens 512 --gen-tokens 128 --reps 5
bench tiny-cuda-cached models/tiny-mixtral --backend cuda --cache-size 2 --prompt-tokens 512 --gen-tokens 128 --reps 5
# bf16 prefill: resident routed experts as grouped GEMMs (against f32 per-expert GEMMs above).
bench tiny-cuda-bf16 models/tiny-mixtral --backend cuda --gemm-precision bf16 --prompt-tokens 512 --gen-tokens 128 --reps 5
# A launch per kernel instead of one recorded graph per decode step: what the graphs save.
bench tiny-cuda-no-graphs models/tiny-mixtral --backend cuda --cuda-graphs false --prompt-tokens 512 --gen-tokens 128 --reps 5

if [ "${BIG:-0}" = 1 ]; then
  big=/tmp/mixtral-8x7b-q4_0.gguf
  [ -f "$big" ] || python3 .deps/tools/make_synthetic_gguf.py --preset mixtral-8x7b --type q4_0 \
      --threads "$jobs" --out "$big" -q
  # bf16 tensor-core prefill GEMMs (the prefill goals), the routed experts grouped; the f32
  # run's experts go one by one through cuBLAS. Decode is f32 matvec either way.
  bench mixtral-cuda "$big" --backend cuda --gemm-precision bf16 --prompt-tokens 512 \
      --gen-tokens 128 --reps 3
  bench mixtral-cuda-f32 "$big" --backend cuda --gemm-precision f32 --prompt-tokens 512 \
      --gen-tokens 16 --reps 3
  bench mixtral-cuda-no-graphs "$big" --backend cuda --cuda-graphs false --prompt-tokens 16 \
      --gen-tokens 64 --reps 3
  # Under a budget: misses split between PCIe and the CPU, next-layer experts prefetched on the
  # copy stream.
  for budget in 24GiB 16GiB 8GiB; do
    bench "mixtral-cuda-$budget" "$big" --backend cuda --gpu-memory "$budget" --cache-size auto \
        --miss-policy auto --prefetch next_layer_gate --gemm-precision bf16 \
        --prompt-tokens 512 --gen-tokens 128 --reps 3
  done
fi
ls -la "$OUT"
