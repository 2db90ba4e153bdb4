// Runtime: the process's place in the job, and the owner of MPI's lifetime.
//
// Under a launcher (mpirun/mpiexec, srun with PMIx, a Kubernetes MPIJob) the constructor initializes MPI and
// finds the rank, the world size and the rank within the node; the destructor finalizes MPI. Run plainly
// (`mlagpt train ...` on one CPU or GPU) it does not touch MPI at all and reports rank 0 of 1, so the same binary
// works with and without mpirun. Create exactly one, in main(), before any other mlagpt object. It also makes
// SIGXFSZ ignored, so that a file-size limit is a write error, not a crash.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "launch/communicator.h"

namespace mlagpt::launch {

struct ProcessInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // rank among the processes on this host
  int local_size = 1;
  std::string host;
  bool mpi = false;  // MPI was initialized by this Runtime
};

// True when environment variables of a known MPI launcher are present.
bool launched_by_mpi();

// The CPUs this process may run on: its affinity mask's count (what taskset, cgroups and mpirun's binding leave
// it), or std::thread::hardware_concurrency() where the mask cannot be read; at least 1.
int available_cpus();
// The CPUs of this process's affinity mask as a list of ranges ("0-3,8"), for the log; "" where it cannot be read.
std::string affinity_list();

// Intra-op threads for one of `local_size` processes on a node that share `cpus`: cpus / local_size, at least 1, so
// that ranks never oversubscribe the cores (under socket binding, where each mask already holds a socket, it
// undersubscribes; set the threads by hand there).
int threads_per_process(int cpus, int local_size);

class Runtime {
 public:
  // `force_mpi` initializes MPI even without a launcher (an MPI singleton), for tests.
  Runtime(int* argc, char*** argv, bool force_mpi = false);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  const ProcessInfo& info() const { return info_; }

  // A communicator over every process of the job for CPU tensors: MPI when MPI is up, else the local backend.
  std::unique_ptr<Communicator> world_cpu_communicator() const;

  // Ends the whole job at once (all ranks) after a fatal error on this one (MPI_Abort), from any thread; returns
  // only when there is no job to end (no MPI, or one process).
  void abort(int exit_code) const;
  // Ends the job from a thread that cannot throw to main() (the collective watchdog's, while the main thread is
  // blocked in a collective): abort(exit_code), and where there is no job to abort, this process. Never returns.
  [[noreturn]] void end_job(int exit_code) const;

 private:
  ProcessInfo info_;
  std::thread::id main_thread_;
  bool abort_from_any_thread_ = false;  // MPI_THREAD_MULTIPLE was provided
};

}  // namespace mlagpt::launch
