# shellcheck shell=bash
# Sourced by the bundle's run-tests.sh and gpu_smoke.sh on the GPU machine:  . BUNDLE/env.sh TORCH_LIB
# Points the dynamic loader at the bundle's Debian libraries (lib/) and at the machine's torch wheel (TORCH_LIB is
# its torch/lib; the wheel's nvidia/ packages beside it hold CUDA and NCCL), and Open MPI at its packed components
# and help texts. Sets bundle_dir to the bundle's folder.
bundle_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LD_LIBRARY_PATH="$bundle_dir/lib:$1:$1/../../nvidia/cu13/lib:$1/../../nvidia/nccl/lib:${LD_LIBRARY_PATH:-}"
export OPAL_PREFIX="$bundle_dir" OPAL_LIBDIR="$bundle_dir/lib/openmpi/lib"
