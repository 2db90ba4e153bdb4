// What the process was built with and runs with, for `mlagpt --version` and the start-of-run log: one line per
// backend owned by this folder (MPI, CUDA runtime and devices, NCCL). Safe to call before MPI is initialized.
#pragma once

#include <string>

namespace mlagpt::launch {

std::string mpi_library_version();
// "built with CUDA 13.0; runtime 13.0, driver 13.0, 1 device(s)" or "not built with CUDA" or the runtime's error.
std::string cuda_summary();
// "built with 2.27.7, runs with 2.27.7", or "not built with CUDA".
std::string nccl_summary();
// CUDA devices visible to this process; 0 without a driver, without devices, or in a build without CUDA.
int cuda_device_count();
// The CUDA device's name ("NVIDIA H100 80GB HBM3"), or "" without CUDA or such a device.
std::string cuda_device_name(int device);

}  // namespace mlagpt::launch
