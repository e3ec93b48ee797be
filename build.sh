#!/usr/bin/env bash
# Build, test and pack FlashDmAttn.
#   ./build.sh build          native library (when nvcc exists) and managed code (when the .NET SDK exists)
#   ./build.sh test [args]    build what can be built (the native library only where a GPU can run it), check that
#                             samples/c compiles against flash_dmattn.h as C99, then run the built test executable;
#                             extra args go to it (e.g. --filter 'TestCategory!=Gpu'). Needs only the .NET runtime when
#                             the test assembly is already built (the GPU machine has no SDK).
#   ./build.sh pack           the NuGet packages, in artifacts/packages: FlashDmAttn.runtime.linux-x64 (the native
#                             library; where nvcc exists, with python3 alone) and FlashDmAttn (managed; where the .NET
#                             SDK exists). Package times come from SOURCE_DATE_EPOCH, else from the last commit.
#   ./build.sh sample [--runtime RID]
#                             restore samples/csharp from artifacts/packages (for RID too: then the runtime package
#                             comes along), build it into artifacts/sample and run it; without the .NET SDK, run the
#                             sample built there before.
#   ./build.sh bench [args]   benchmarks against PyTorch on this GPU: build what can be built, run bench/baselines.py
#                             (when python3 has torch and triton), then the built benchmark executable, which merges
#                             both into bench/results/<gpu>-<date>.{md,png,json}; args go to it (--quick: a subset;
#                             --out DIR; --filter TEXT; --help). Without a GPU it runs the CPU reference on a small
#                             case. FDMA_CUDA_ARCHITECTURES (e.g. 90) narrows the native build to those GPUs.
#                             With python3 with torch and triton it also runs bench/dma_topk.py (DMA's top-k mask as key
#                             lifetimes against the dense mask and the PyTorch peers; --quick: fewer rows), which writes
#                             <gpu>-<date>[-quick]-dma-topk.{md,json} beside the report (bench/results, or --out DIR).
#                             Last, the host cost per call (bench/host_overhead.cu, where nvcc exists, and the .NET rows):
#                             <gpu>-<date>-host-overhead.{md,json}.
#   test and bench use the library FLASHDMATTN_NATIVE_LIBRARY names, when it is set, instead of building one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

native_dir=build/native
native_lib=$native_dir/libflash_dmattn.so
test_dll=artifacts/bin/FlashDmAttn.Tests/release/FlashDmAttn.Tests.dll
bench_dll=artifacts/bin/FlashDmAttn.Bench/release/FlashDmAttn.Bench.dll
bench_work=build/bench
packages_dir=artifacts/packages
sample_dll=artifacts/sample/FlashDmAttn.Sample.dll

# nvcc is often installed without being on PATH.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

have_nvcc() { command -v nvcc >/dev/null 2>&1; }
have_gpu() { compgen -G '/dev/nvidia[0-9]*' >/dev/null || { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; }
have_dotnet_sdk() { command -v dotnet >/dev/null 2>&1 && [ -n "$(dotnet --list-sdks 2>/dev/null)" ]; }

# FDMA_CUDA_ARCHITECTURES narrows the build; without it the build has CMake's default architectures again, whatever an
# earlier narrowed build left in the cache.
build_native() {
  local archs=(-UFDMA_CUDA_ARCHITECTURES)
  [ -z "${FDMA_CUDA_ARCHITECTURES:-}" ] || archs=("-DFDMA_CUDA_ARCHITECTURES=$FDMA_CUDA_ARCHITECTURES")
  cmake -S . -B "$native_dir" -DCMAKE_BUILD_TYPE=Release "${archs[@]}"
  cmake --build "$native_dir" -j
}

build_managed() {
  dotnet build FlashDmAttn.sln -c Release
}

build() {
  if have_nvcc; then build_native; else echo "build.sh: no nvcc: skipping the native library"; fi
  if have_dotnet_sdk; then build_managed; else echo "build.sh: no .NET SDK: skipping the managed build"; fi
}

# The C sample's half that calls the ABI needs flash_dmattn.h alone: compiling it as strict C99 keeps the header plain
# C for C engines (the other half needs the CUDA runtime's headers, and a GPU to run).
check_c_header() {
  if ! command -v cc >/dev/null 2>&1; then
    echo "build.sh: no C compiler: not checking flash_dmattn.h as C99"
    return
  fi
  local objects
  objects=$(mktemp -d)
  for source in samples/c/attention.c samples/c/reference.c; do
    cc -std=c99 -Wall -Wextra -Werror -pedantic -Inative/include -c "$source" -o "$objects/$(basename "$source").o" || {
      rm -rf "$objects"
      echo "build.sh: $source does not compile as C99 against native/include/flash_dmattn.h" >&2
      exit 1
    }
  done
  rm -rf "$objects"
  echo "build.sh: samples/c compiles against flash_dmattn.h as C99 (-Wall -Wextra -Werror -pedantic)"
}

run_tests() {
  check_c_header
  # The native library only serves the GPU tests: build it where they can run (nvcc and a GPU), unless one is given.
  if [ -n "${FLASHDMATTN_NATIVE_LIBRARY:-}" ]; then
    echo "build.sh: FLASHDMATTN_NATIVE_LIBRARY is set: not building the native library"
  elif have_nvcc && have_gpu; then
    build_native
  else
    echo "build.sh: no nvcc or no GPU: not building the native library (GPU tests will be skipped)"
  fi
  if have_dotnet_sdk; then build_managed; else echo "build.sh: no .NET SDK: running the prebuilt tests"; fi
  if [ ! -f "$test_dll" ]; then
    echo "build.sh: $test_dll is missing (build it where the .NET SDK is installed)" >&2
    exit 1
  fi
  if [ -z "${FLASHDMATTN_NATIVE_LIBRARY:-}" ] && [ -f "$native_lib" ]; then
    export FLASHDMATTN_NATIVE_LIBRARY="$PWD/$native_lib"
  fi
  echo "build.sh: native library: ${FLASHDMATTN_NATIVE_LIBRARY:-(none: GPU tests will be skipped)}"

  local rc=0
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  dotnet "$test_dll" --progress off --ansi off --show-test-results failed,skipped --show-stdout failed "$@" 2>&1 | tee "$log" || rc=$?

  # Microsoft.Testing.Platform ends with a summary: "  total: N", "  failed: N", "  succeeded: N", "  skipped: N".
  local passed failed skipped
  passed=$(sed -n 's/^ *succeeded: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  failed=$(sed -n 's/^ *failed: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  skipped=$(sed -n 's/^ *skipped: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  if [ -z "$passed" ] || [ -z "$failed" ] || [ -z "$skipped" ]; then
    echo "build.sh: no test summary found (test executable exit code $rc)" >&2
    exit $((rc == 0 ? 1 : rc))
  fi
  echo "$passed passed, $failed failed, $skipped skipped"
  if [ "$failed" -ne 0 ] || [ "$rc" -ne 0 ]; then
    exit $((rc == 0 ? 1 : rc))
  fi
}

pack() {
  if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    local commit_time
    if commit_time=$(git log -1 --format=%ct 2>/dev/null) && [ -n "$commit_time" ]; then
      export SOURCE_DATE_EPOCH=$commit_time
    fi
  fi
  mkdir -p "$packages_dir"
  if have_nvcc; then
    build_native
    local rid
    case "$(uname -m)" in
      x86_64) rid=linux-x64 ;;
      aarch64) rid=linux-arm64 ;;
      *) rid="linux-$(uname -m)" ;;
    esac
    python3 packaging/pack_runtime.py --rid "$rid" --library "$native_lib" --out "$packages_dir" \
      --archs "$(sed -n 's/^FDMA_CUDA_ARCHITECTURES:[A-Z]*=//p' "$native_dir/CMakeCache.txt")"
  else
    echo "build.sh: no nvcc: no runtime package"
  fi
  if have_dotnet_sdk; then
    dotnet pack bindings/FlashDmAttn/FlashDmAttn.csproj -c Release -o "$packages_dir"
  else
    echo "build.sh: no .NET SDK: no managed package"
  fi
  echo "build.sh: packages in $packages_dir:"
  ls -l "$packages_dir"
}

run_sample() {
  local restore_args=()
  case "${1:-}" in
    --runtime) restore_args=(-r "${2:?--runtime needs a runtime identifier, e.g. linux-x64}") ;;
    "") ;;
    *) echo "usage: $0 sample [--runtime RID]" >&2; exit 2 ;;
  esac
  if have_dotnet_sdk; then
    # A packages folder of its own: the user-wide one would keep an earlier package of the same version.
    rm -rf build/sample-packages "$(dirname "$sample_dll")"
    dotnet restore samples/csharp "${restore_args[@]}" --packages build/sample-packages
    dotnet build samples/csharp --no-restore -c Release "${restore_args[@]}" -o "$(dirname "$sample_dll")"
  else
    echo "build.sh: no .NET SDK: running the sample built before"
  fi
  if [ ! -f "$sample_dll" ]; then
    echo "build.sh: $sample_dll is missing (build it where the .NET SDK is installed)" >&2
    exit 1
  fi
  dotnet "$sample_dll"
}

run_bench() {
  if [ -n "${FLASHDMATTN_NATIVE_LIBRARY:-}" ]; then
    echo "build.sh: FLASHDMATTN_NATIVE_LIBRARY is set: not building the native library"
  elif have_nvcc && have_gpu; then
    build_native
  else
    echo "build.sh: no nvcc or no GPU: not building the native library"
  fi
  if have_dotnet_sdk; then build_managed; else echo "build.sh: no .NET SDK: running the prebuilt benchmarks"; fi
  if [ ! -f "$bench_dll" ]; then
    echo "build.sh: $bench_dll is missing (build it where the .NET SDK is installed)" >&2
    exit 1
  fi
  if [ -z "${FLASHDMATTN_NATIVE_LIBRARY:-}" ] && [ -f "$native_lib" ]; then
    export FLASHDMATTN_NATIVE_LIBRARY="$PWD/$native_lib"
  fi
  if ! have_gpu; then
    echo "build.sh: GPU benchmarks need a CUDA device, and this machine has none."
    dotnet "$bench_dll" --cpu-reference
    return
  fi

  # The suite is defined once, in the benchmark executable; the baselines receive its list of rows.
  local list_args=() dma_args=() out_dir=bench/results args=("$@") i
  for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
      --quick) list_args+=(--quick); dma_args+=(--quick) ;;
      --filter) list_args+=(--filter "${args[i + 1]:-}") ;;
      --out) out_dir=${args[i + 1]:-$out_dir} ;;
    esac
  done
  local commit=${FDMA_BENCH_COMMIT:-}
  if [ -z "$commit" ] && commit=$(git rev-parse --short HEAD 2>/dev/null); then
    [ -z "$(git status --porcelain 2>/dev/null)" ] || commit="$commit+changes"
  fi
  mkdir -p "$bench_work"
  rm -rf "$bench_work/exchange" "$bench_work/baselines.json"
  local baseline_args=()
  if command -v python3 >/dev/null 2>&1 && python3 -c 'import torch, triton' >/dev/null 2>&1; then
    dotnet "$bench_dll" --list-cases "${list_args[@]}" >"$bench_work/cases.json"
    PYTHONUNBUFFERED=1 python3 bench/baselines.py --cases "$bench_work/cases.json" --out "$bench_work/baselines.json" \
      --exchange "$bench_work/exchange" || echo "build.sh: bench/baselines.py failed; merging the rows it finished" >&2
    if [ -f "$bench_work/baselines.json" ]; then
      baseline_args=(--baselines "$bench_work/baselines.json" --exchange "$bench_work/exchange")
    fi
    # DMA's mask in O(L): a section of its own, through the C ABI (tests/native/fdma.py) and PyTorch.
    FDMA_BENCH_COMMIT="${commit:-unknown}" PYTHONUNBUFFERED=1 python3 bench/dma_topk.py --out "$out_dir" "${dma_args[@]}" \
      || echo "build.sh: bench/dma_topk.py failed; its JSON keeps the rows it finished" >&2
  else
    echo "build.sh: no python3 with torch and triton: the report will hold our kernel only (and no DMA top-k section)"
  fi

  dotnet "$bench_dll" "${baseline_args[@]}" --work "$bench_work" --commit "${commit:-unknown}" "$@"

  # Host cost per call: the C ABI beside the CUDA calls it is made of (bench/host_overhead.cu), then the .NET rows;
  # one report, <gpu>-<date>-host-overhead.{md,json}.
  local host_args=() lib_dir
  lib_dir=$(dirname "${FLASHDMATTN_NATIVE_LIBRARY:-$native_lib}")
  if have_nvcc && [ -f "$lib_dir/libflash_dmattn.so" ] &&
    nvcc -O2 -std=c++17 -o "$bench_work/host_overhead" bench/host_overhead.cu -Inative/include -L"$lib_dir" -lflash_dmattn &&
    LD_LIBRARY_PATH="$lib_dir" "$bench_work/host_overhead" --json "$bench_work/host-overhead-c.json"; then
    host_args=(--c-abi "$bench_work/host-overhead-c.json")
  else
    echo "build.sh: bench/host_overhead.cu did not build or run (needs nvcc and the native library): .NET rows only" >&2
  fi
  dotnet "$bench_dll" --host-overhead "${host_args[@]}" --out "$out_dir" --commit "${commit:-unknown}"
}

verb=${1:-}
[ $# -gt 0 ] && shift
case "$verb" in
  build) build ;;
  test) run_tests "$@" ;;
  pack) pack ;;
  sample) run_sample "$@" ;;
  bench) run_bench "$@" ;;
  *) echo "usage: $0 build | test [test args...] | pack | sample [--runtime RID] | bench [--quick] [bench args...]" >&2; exit 2 ;;
esac
