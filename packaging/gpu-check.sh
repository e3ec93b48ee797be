#!/usr/bin/env bash
# The packages checked on the GPU machine (nvcc, CMake, python3; no .NET SDK, no network). Run it in the repository
# root with OUT naming a folder whose files come back:
#
#   OUT=/some/folder bash packaging/gpu-check.sh
#
# 1. ./build.sh pack: the native library for CMake's default architectures (80;90; FDMA_CUDA_ARCHITECTURES must be
#    unset) and FlashDmAttn.runtime.linux-x64.<version>.nupkg (no managed package: that needs the SDK).
# 2. cmake --install of that build into a temporary prefix; samples/c configured against it with
#    find_package(FlashDmAttn CONFIG), built and run: a forward on the GPU checked against a CPU computation. Then the
#    same sources built with the flags of the installed flash_dmattn.pc (where pkg-config exists) and run.
# 3. Into $OUT (at most 8 files, 16 MiB each): gpu-check.txt (what each step did and the package's contents),
#    gpu-check-logs.tar.gz (every step's full log), the runtime .nupkg cut into parts of at most 15 MiB
#    (<name>.part00, .part01, ...) and SHA256SUMS for the whole .nupkg.
# The exit code is 0 when the package was made and the C sample passed both ways.
#
# The two steps that follow:
#   Workstation (.NET SDK), with the returned files in the folder FILES (an absolute path):
#     ./build.sh pack                      # the managed package, into artifacts/packages
#     name=$(awk '{print $2}' FILES/SHA256SUMS) && cat FILES/"$name".part* >artifacts/packages/"$name" &&
#       (cd artifacts/packages && sha256sum -c FILES/SHA256SUMS)
#     ./build.sh sample --runtime linux-x64 # restored from that local feed; artifacts/sample gets libflash_dmattn.so
#     mkdir -p .carry && tar -cJf .carry/sample.tar.xz artifacts/sample && ../shared/gpu/pack-dotnet-runtime.sh
#   GPU machine, with .carry brought along (the .NET runtime and the built sample; no SDK needed):
#     mkdir -p /tmp/dn && tar xJf .carry/dotnet-runtime.tar.xz -C /tmp/dn && export PATH=/tmp/dn:$PATH DOTNET_ROOT=/tmp/dn &&
#       tar xJf .carry/sample.tar.xz && env -u FLASHDMATTN_NATIVE_LIBRARY FLASHDMATTN_BACKEND=Native ./build.sh sample
#     It prints the CPU reference's checksum, then "GPU, Native backend: ... max |GPU - CPU| = ...: OK" and exits 0
#     (FLASHDMATTN_BACKEND=Native: the native library from the runtime package, or an error; never the NVRTC fallback).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

: "${OUT:?set OUT to the folder whose files come back}"
if [ -n "${FDMA_CUDA_ARCHITECTURES:-}" ]; then
  echo "gpu-check.sh: unset FDMA_CUDA_ARCHITECTURES: the package holds CMake's default architectures" >&2
  exit 2
fi
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

mkdir -p "$OUT"
work=$(mktemp -d)
logs=$work/logs
prefix=$work/prefix
summary=$OUT/gpu-check.txt
mkdir -p "$logs"
: >"$summary"
failed=0

note() { echo "$*" | tee -a "$summary"; }

# Runs a step with its output in logs/NAME.log, and notes its result and the log's last lines in the summary.
step() {
  local name=$1
  shift
  local started=$SECONDS rc=0
  "$@" >"$logs/$name.log" 2>&1 || rc=$?
  note "== $name: $([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc)") in $((SECONDS - started)) s: $*"
  tail -n 15 "$logs/$name.log" | sed 's/^/   /' | tee -a "$summary"
  [ "$rc" -eq 0 ] || failed=1
  return "$rc"
}

# The C sample against the installed package through its pkg-config file, linked with the CUDA runtime's own library.
build_c_sample_with_pkg_config() {
  local cuda_root
  cuda_root=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
  pkg-config --modversion flash_dmattn
  pkg-config --cflags --libs flash_dmattn
  # shellcheck disable=SC2046 # the flags are words
  cc -std=c99 -O2 $(pkg-config --cflags flash_dmattn) -I"$cuda_root/include" samples/c/*.c -o "$work/sample-pkg-config" \
    $(pkg-config --libs flash_dmattn) -L"$cuda_root/lib64" -lcudart -lm \
    -Wl,-rpath,"$prefix/lib" -Wl,-rpath,"$cuda_root/lib64"
}

finish() {
  tar -czf "$OUT/gpu-check-logs.tar.gz" -C "$work" logs
  rm -rf "$work"
}
trap finish EXIT

note "gpu-check.sh on $(hostname) at $(date -u +%FT%TZ); $(nvcc --version 2>/dev/null | tail -n 1); $(cmake --version | head -n 1)"
note "$(nvidia-smi -L 2>/dev/null || echo 'nvidia-smi: none')"

rm -f artifacts/packages/FlashDmAttn.runtime.*.nupkg
if step pack ./build.sh pack; then
  package=$(ls artifacts/packages/FlashDmAttn.runtime.*.nupkg 2>/dev/null | head -n 1)
  if [ -z "$package" ]; then
    note "== no runtime package in artifacts/packages"
    failed=1
  else
    note "== $package, $(stat -c %s "$package") bytes; contents:"
    python3 -m zipfile -l "$package" | tee -a "$summary"
    python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1])
print(next(z.read(n).decode() for n in z.namelist() if n.endswith(".nuspec")))' "$package" | tee -a "$summary"
    (cd "$(dirname "$package")" && sha256sum "$(basename "$package")") >"$OUT/SHA256SUMS"
    split -b 15M -d "$package" "$OUT/$(basename "$package").part"
    note "== returned as: $(cd "$OUT" && ls "$(basename "$package")".part* | tr '\n' ' ')"
  fi

  step install cmake --install build/native --prefix "$prefix" &&
    find "$prefix" -type f | sed "s|^$prefix/|   |" | sort | tee -a "$summary"
  step sample-c-configure cmake -S samples/c -B "$work/sample-c" -DCMAKE_PREFIX_PATH="$prefix" &&
    step sample-c-build cmake --build "$work/sample-c" &&
    step sample-c-run "$work/sample-c/flash_dmattn_sample"
  if command -v pkg-config >/dev/null 2>&1; then
    step sample-c-pkg-config-build build_c_sample_with_pkg_config &&
      step sample-c-pkg-config-run "$work/sample-pkg-config"
  else
    note "== no pkg-config here: the .pc file was not tried"
  fi
fi

note "== gpu-check.sh: $([ "$failed" -eq 0 ] && echo PASSED || echo FAILED)"
exit "$failed"
