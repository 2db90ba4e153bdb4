#include "launch/backend_versions.h"

#include <mpi.h>

#include <fmt/format.h>

#ifdef MLAGPT_WITH_CUDA
#include "launch/cuda_check.h"
#endif

namespace mlagpt::launch {

std::string mpi_library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  MPI_Get_library_version(text, &length);
  std::string version(text, static_cast<size_t>(length));
  // Open MPI's string carries the repository and release date after a comma; the first part names the version.
  const auto comma = version.find(',');
  if (comma != std::string::npos) {
    version.resize(comma);
  }
  while (!version.empty() && (version.back() == '\n' || version.back() == ' ' || version.back() == '\0')) {
    version.pop_back();
  }
  return fmt::format("{} (MPI {}.{})", version, MPI_VERSION, MPI_SUBVERSION);
}

#ifdef MLAGPT_WITH_CUDA

namespace {
std::string cuda_version_text(int version) {
  return fmt::format("{}.{}", version / 1000, (version % 1000) / 10);
}
}  // namespace

std::string cuda_summary() {
  std::string text = fmt::format("built with CUDA {}", cuda_version_text(CUDART_VERSION));
  int runtime = 0;
  int driver = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  text += fmt::format("; runtime {}", cuda_version_text(runtime));
  text += driver == 0 ? "; no CUDA driver" : fmt::format(", driver {}", cuda_version_text(driver));
  int devices = 0;
  const cudaError_t rc = cudaGetDeviceCount(&devices);
  if (rc != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later CUDA calls start clean
    return text + fmt::format("; 0 devices ({})", cudaGetErrorString(rc));
  }
  return text + fmt::format("; {} device(s)", devices);
}

std::string nccl_summary() {
  int version = 0;
  ncclGetVersion(&version);
  // NCCL >= 2.9 encodes major*10000 + minor*100 + patch.
  return fmt::format("built with {}.{}.{}, runs with {}.{}.{}", NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH, version / 10000,
                     (version % 10000) / 100, version % 100);
}

int cuda_device_count() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return devices;
}

std::string cuda_device_name(int device) {
  cudaDeviceProp properties{};
  if (cudaGetDeviceProperties(&properties, device) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  return properties.name;
}

#else

int cuda_device_count() {
  return 0;
}
std::string cuda_device_name(int /*device*/) {
  return "";
}
std::string cuda_summary() {
  return "not built with CUDA";
}
std::string nccl_summary() {
  return "not built with CUDA";
}

#endif

}  // namespace mlagpt::launch
