#include "launch/error.h"

#include <mpi.h>
#include <unistd.h>

#include <array>

#include <fmt/format.h>

namespace mlagpt {

std::string process_description() {
  std::array<char, 256> host{};
  if (gethostname(host.data(), host.size() - 1) != 0) {
    host[0] = '\0';
  }
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized != 0 && finalized == 0) {
    int rank = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return fmt::format("rank {} on host {}", rank, host.data());
  }
  return fmt::format("host {}", host.data());
}

std::string describe_failure(const char* what, const char* expr, const std::string& detail, const char* file,
                             int line) {
  return fmt::format("{}: `{}` failed{}{} at {}:{} ({})", what, expr, detail.empty() ? "" : ": ", detail, file, line,
                     process_description());
}

}  // namespace mlagpt
