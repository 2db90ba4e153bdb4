#include "launch/runtime.h"

#include <mpi.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <cstdlib>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "launch/mpi_check.h"
#include "launch/mpi_communicator.h"

namespace mlagpt::launch {

bool launched_by_mpi() {
  // Open MPI's mpirun, PMIx launchers (Open MPI 5, srun --mpi=pmix), and PMI-1/2 launchers (MPICH, srun).
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) {
    if (std::getenv(name) != nullptr) {
      return true;
    }
  }
  return false;
}

int available_cpus() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0 && CPU_COUNT(&mask) > 0) {
    return CPU_COUNT(&mask);
  }
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

std::string affinity_list() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof(mask), &mask) != 0) {
    return {};
  }
  std::string list;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &mask)) {
      continue;
    }
    int last = cpu;
    while (last + 1 < CPU_SETSIZE && CPU_ISSET(last + 1, &mask)) {
      ++last;
    }
    list += (list.empty() ? "" : ",") + (last == cpu ? std::to_string(cpu) : fmt::format("{}-{}", cpu, last));
    cpu = last;
  }
  return list;
}

int threads_per_process(int cpus, int local_size) {
  return std::max(1, cpus / std::max(1, local_size));
}

Runtime::Runtime(int* argc, char*** argv, bool force_mpi) : main_thread_(std::this_thread::get_id()) {
  // A write past the file-size limit (RLIMIT_FSIZE, `ulimit -f`) then fails with EFBIG, which the writer reports as
  // an error naming the file, instead of SIGXFSZ killing the process with a core dump.
  std::signal(SIGXFSZ, SIG_IGN);
  std::array<char, 256> host{};
  gethostname(host.data(), host.size() - 1);
  info_.host = host.data();
  if (!force_mpi && !launched_by_mpi()) {
    return;
  }
  int initialized = 0;
  MLAGPT_MPI_CHECK(MPI_Initialized(&initialized));
  if (initialized != 0) {
    throw MpiError("Runtime: MPI is already initialized; create a single Runtime in main()");
  }
  // MULTIPLE, though only the main thread communicates (the data loader's and exporter's threads never call MPI):
  // the collective watchdog's thread calls MPI_Abort while the main thread may be blocked in a collective. Where
  // the library offers less, abort() from another thread ends just this process, which mpirun turns into the end
  // of the job.
  int provided = 0;
  MLAGPT_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
  info_.mpi = true;
  abort_from_any_thread_ = provided >= MPI_THREAD_MULTIPLE;
  MLAGPT_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  MLAGPT_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &info_.rank));
  MLAGPT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &info_.world_size));
  MPI_Comm node = MPI_COMM_NULL;
  MLAGPT_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, info_.rank, MPI_INFO_NULL, &node));
  MLAGPT_MPI_CHECK(MPI_Comm_rank(node, &info_.local_rank));
  MLAGPT_MPI_CHECK(MPI_Comm_size(node, &info_.local_size));
  MLAGPT_MPI_CHECK(MPI_Comm_free(&node));
}

Runtime::~Runtime() {
  if (info_.mpi) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized == 0) {
      MPI_Finalize();
    }
  }
}

std::unique_ptr<Communicator> Runtime::world_cpu_communicator() const {
  if (info_.mpi) {
    return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD);
  }
  return std::make_unique<LocalCommunicator>();
}

void Runtime::abort(int exit_code) const {
  if (info_.mpi && info_.world_size > 1) {
    if (abort_from_any_thread_ || std::this_thread::get_id() == main_thread_) {
      MPI_Abort(MPI_COMM_WORLD, exit_code);
    }
    std::_Exit(exit_code);  // without MPI_Finalize: mpirun ends the job's other processes
  }
}

void Runtime::end_job(int exit_code) const {
  abort(exit_code);
  std::_Exit(exit_code);
}

}  // namespace mlagpt::launch
