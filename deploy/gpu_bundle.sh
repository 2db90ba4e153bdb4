#!/usr/bin/env bash
# Builds the `gpu` preset (sm_90) here and packs what a bare GPU machine needs to run it into one folder:
#
#   deploy/gpu_bundle.sh [OUT]        (default OUT = .device/bundle, git-ignored)
#
# The bundle holds the mlagpt executable, the executables of the gpu-label tests with CTest's list of them
# (gpu-tests.txt; MLAGPT_BUNDLE_ALL_TESTS=1 packs every test executable), the shared libraries they need from
# Debian packages (Open MPI, HDF5, prometheus-cpp, civetweb, spdlog, fmt, SentencePiece, ...), the example configs,
# a small dataset (the fortune files in a 4096-token BPE, prepared here: the GPU machine has no fortunes package)
# and the single-GPU smoke test. LibTorch, CUDA and NCCL are NOT packed: the GPU machine's own torch wheel provides
# them. On that machine:
#
#   OUT/gpu_smoke.sh                              the smoke test: gpu tests, 50 training steps, sample (issue 13)
#   TORCH_LIB=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__) + "/lib")')
#   OUT/run-tests.sh "$TORCH_LIB" [TEST ...]     the gpu-label tests alone (or the named ones)
#
# The torch wheel there must be the version this bundle was built against (2.11.0+cu130; OUT/torch-version).
# MLAGPT_BUNDLE_BUILD=DIR packs the build in DIR as it is instead of building the gpu preset (to check the packing
# and the smoke test's logic with a CPU build: no GPU test can pass from such a bundle).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/.device/bundle}
cd "$repo"
build=${MLAGPT_BUNDLE_BUILD:-}
if [ -z "$build" ]; then
  deploy/setup.sh
  cmake --preset gpu >/dev/null
  cmake --build --preset gpu
  build=build/gpu
fi

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
cp -L "$build/trainer/mlagpt" "$out/bin/"
# CTest's gpu-label tests, one "NAME EXECUTABLE [ARG ...]" a line, for run-tests.sh; their executables are packed
# (every test executable with MLAGPT_BUNDLE_ALL_TESTS=1).
ctest --test-dir "$build" -L gpu --show-only=json-v1 | python3 -c '
import json, os, sys
tests = json.load(sys.stdin)["tests"]
with open(sys.argv[1], "w") as listing:
    for test in tests:
        command = test["command"]
        listing.write(" ".join([test["name"], os.path.basename(command[0])] + command[1:]) + "\n")
print("\n".join(sorted({test["command"][0] for test in tests})))
' "$out/gpu-tests.txt" | while read -r exe; do cp -L "$exe" "$out/bin/"; done
[ -s "$out/gpu-tests.txt" ] || { echo "gpu_bundle: $build has no gpu-label tests" >&2; exit 1; }
if [ "${MLAGPT_BUNDLE_ALL_TESTS:-0}" = 1 ]; then
  find -L "$build/tests" -maxdepth 2 -type f -executable -name '*_test' -exec cp -L {} "$out/bin/" \;
fi
# Debug information is most of a RelWithDebInfo executable's size and is not needed to run it.
strip --strip-debug "$out"/bin/*

# Every library the executables load that comes from the system's package manager, except glibc/libstdc++ and
# the driver (present on any GPU machine); torch, CUDA and NCCL libraries come from the machine's torch wheel.
for exe in "$out"/bin/*; do
  ldd "$exe" | awk '/=> \//{print $3}'
done | sort -u |
  grep -vE '/(torch|nvidia)/|/usr/local/cuda|lib(c|m|dl|rt|pthread|gcc_s|stdc\+\+)\.so|ld-linux|libcuda\.so' |
  grep -vE '/lib(cudart|cusolver|cublas|cublasLt|cusparse|nvJitLink|nvrtc|nccl|cudnn)[^/]*\.so' |
  while read -r lib; do cp -L "$lib" "$out/lib/"; done
# Open MPI loads its components and help texts at run time.
cp -r /usr/lib/x86_64-linux-gnu/openmpi "$out/lib/openmpi"
mkdir -p "$out/share" && cp -r /usr/share/openmpi "$out/share/openmpi"
cp /usr/bin/h5dump "$out/bin/" 2>/dev/null || true

# The scripts, the configs and the smoke test's dataset.
cp deploy/bundle/env.sh deploy/bundle/run-tests.sh deploy/gpu_smoke.sh "$out/"
cp -r launch/configs "$out/configs"
"$build/trainer/mlagpt" prepare --tokenizer bpe --vocab-size 4096 --out "$out/data/fortunes_bpe4096"
python=${MLAGPT_PYTHON:-$repo/.venv/bin/python}
if [ -x "$python" ]; then
  "$python" -c 'import torch; print(torch.__version__)' >"$out/torch-version"
fi
du -sh "$out"
