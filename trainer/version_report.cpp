#include "trainer/version_report.h"

#include <ATen/Context.h>
#include <torch/version.h>

#include <fmt/format.h>

#include "data/hdf5_file.h"
#include "launch/backend_versions.h"
#include "mlagpt/build_info.h"
#include "monitoring/prometheus_exporter.h"

namespace mlagpt::trainer {

std::string version_report() {
  std::string text = fmt::format("mlagpt {} ({} build, {})\n", MLAGPT_VERSION, MLAGPT_BUILD_TYPE, MLAGPT_COMPILER);
  const auto line = [&text](const char* name, const std::string& value) {
    text += fmt::format("  {:<15} {}\n", name, value);
  };
  line("LibTorch",
       fmt::format("{} (CUDA in LibTorch: {})", TORCH_VERSION, at::globalContext().hasCUDA() ? "yes" : "no"));
  line("CUDA", launch::cuda_summary());
  line("NCCL", launch::nccl_summary());
  line("MPI", launch::mpi_library_version());
  line("HDF5", data::hdf5_version());
  line("prometheus-cpp", monitoring::prometheus_cpp_version());
  return text;
}

}  // namespace mlagpt::trainer
