#!/usr/bin/env bash
# Builds the `gpu` preset (sm_90) here and packs what a bare GPU machine needs to run it into one folder:
#
#   deploy/gpu_bundle.sh [OUT]        (default OUT = .device/bundle, git-ignored)
#
# The bundle holds the mlagpt executable, every test executable and CTest's test list, and the shared libraries
# they need from Debian packages (Open MPI, HDF5, prometheus-cpp, civetweb, spdlog, fmt, SentencePiece, ...).
# LibTorch, CUDA and NCCL are NOT packed: the GPU machine's own torch wheel provides them. On that machine:
#
#   TORCH_LIB=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__) + "/lib")')
#   OUT/run-tests.sh "$TORCH_LIB" [TEST ...]     (default: the executables of the gpu-label tests)
#
# The torch wheel there must be the version this bundle was built against (2.11.0+cu130).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/.device/bundle}
cd "$repo"
deploy/setup.sh
cmake --preset gpu >/dev/null
cmake --build --preset gpu

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
build=build/gpu
cp "$build/trainer/mlagpt" "$out/bin/"
find "$build/tests" -maxdepth 2 -type f -executable -name '*_test' -exec cp {} "$out/bin/" \;

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

cat > "$out/run-tests.sh" <<'RUN'
#!/usr/bin/env bash
# run-tests.sh TORCH_LIB [TEST ...]: runs the named packed test executables (default: those that use the GPU).
# MLAGPT_REQUIRE_GPU=1: on the GPU machine a gpu test that finds no device fails instead of skipping, and an
# executable whose tests all skipped (exit 77) counts as a failure too.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
torch_lib=$1; shift
export LD_LIBRARY_PATH="$here/lib:$torch_lib:$torch_lib/../../nvidia/cu13/lib:$torch_lib/../../nvidia/nccl/lib:${LD_LIBRARY_PATH:-}"
export OPAL_PREFIX="$here" OPAL_LIBDIR="$here/lib/openmpi/lib" OMP_NUM_THREADS=4 MLAGPT_REQUIRE_GPU=1
tests=("$@")
# The executables of the gpu-label CTest tests (tests/*/CMakeLists.txt); qr_test holds cusolver_qr_test.
[ ${#tests[@]} -gt 0 ] || tests=(nccl_communicator_test process_mesh_gpu_test qr_test rsvd_gpu_test loader_gpu_test)
status=0
for t in "${tests[@]}"; do
  echo "=== $t"
  "$here/bin/$t"
  rc=$?
  if [ $rc -ne 0 ]; then
    echo "=== $t FAILED: exit status $rc$([ $rc -eq 77 ] && echo ' (every test skipped)')"
    status=1
  fi
done
exit $status
RUN
chmod +x "$out/run-tests.sh"
du -sh "$out"
