// mlagpt's entry point: keep freed host memory for reuse (launch/host_memory.h), start the process runtime (MPI
// when launched by mpirun), run the command, and turn any error into one log line, an abort of the whole job when
// other ranks depend on this one, and a non-zero exit.
#include <spdlog/spdlog.h>

#include <exception>
#include <optional>

#include "launch/host_memory.h"
#include "launch/runtime.h"
#include "monitoring/logging.h"
#include "trainer/cli.h"

int main(int argc, char** argv) {
  mlagpt::launch::keep_freed_host_memory();
  std::optional<mlagpt::launch::Runtime> runtime;
  try {
    runtime.emplace(&argc, &argv);
    mlagpt::monitoring::setup_logging(runtime->info().rank);
    return mlagpt::trainer::run_cli(argc, argv, *runtime);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    if (runtime) {
      runtime->abort(1);
    }
    return 1;
  }
}
