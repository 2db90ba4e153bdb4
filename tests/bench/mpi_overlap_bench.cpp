// Does Open MPI progress a non-blocking all-reduce while the caller computes on the CPU (issue 10)? Not a CTest
// test: timings on a shared machine mean little.
//
// For one float32 bucket of --mb MB (25 by default, a gradient bucket), under mpiexec, through MpiCommunicator:
//   (a) the blocking all_reduce alone;
//   (b) the compute alone: chunks of one [--matrix, --matrix] at::mm each (about 1 ms on one thread at 256), as many
//       chunks as take about (a);
//   (c) all_reduce_async, the compute with no MPI call at all, wait();
//   (d) the same, with test() after every chunk.
// The hidden share of the communication is (a + b - x) / a for x = (c), (d): 1 when the all-reduce is entirely hidden
// behind the compute, 0 when it runs after it. Each figure is the median over --repeats runs of the slowest rank's
// time (after one untimed run of each); every rank uses one intra-op thread.
//
// Run (the environment is tests/CMakeLists.txt's MLAGPT_MPI_TEST_ENV):
//   export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
//   export OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1
//   mpiexec -n 2 build/ci/tests/bench/mpi_overlap_bench [--mb 25] [--matrix 256] [--repeats 7]
#include <ATen/Parallel.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <fmt/format.h>
#include <mpi.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <functional>
#include <vector>

#include "launch/error.h"
#include "launch/mpi_check.h"
#include "launch/mpi_communicator.h"
#include "launch/runtime.h"

namespace {

using mlagpt::launch::Communicator;
using mlagpt::launch::ReduceOp;
using Clock = std::chrono::steady_clock;

struct BenchConfig {
  double mb = 25.0;
  int64_t matrix = 256;
  int repeats = 7;
};

// The slowest rank's seconds.
double slowest(double seconds) {
  MLAGPT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
  return seconds;
}

// The median over `repeats` of the slowest rank's time of `body`, after one untimed run; the ranks start together.
double median_seconds(int repeats, const std::function<void()>& reset, const std::function<void()>& body) {
  std::vector<double> times;
  for (int i = 0; i <= repeats; ++i) {
    reset();
    MLAGPT_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    const auto start = Clock::now();
    body();
    const double seconds = slowest(std::chrono::duration<double>(Clock::now() - start).count());
    if (i > 0) {
      times.push_back(seconds);
    }
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

int run(const BenchConfig& config, Communicator& comm) {
  at::set_num_threads(1);
  const auto numel = static_cast<int64_t>(config.mb * 1e6 / 4);
  at::Tensor bucket = at::ones({numel}, at::kFloat);
  const at::Tensor a = at::randn({config.matrix, config.matrix}, at::kFloat);
  const at::Tensor b = at::randn({config.matrix, config.matrix}, at::kFloat);
  at::Tensor sink = at::mm(a, b);
  auto reset = [&] { bucket.fill_(1.0F); };
  auto chunk = [&] { sink = at::mm(a, b); };

  const double chunk_s = median_seconds(
      config.repeats, [] {}, chunk);
  const double blocking = median_seconds(config.repeats, reset, [&] { comm.all_reduce(bucket, ReduceOp::kSum); });
  // Every rank runs the same number of chunks (the times above are already the slowest rank's).
  const int chunks = std::max(1, static_cast<int>(std::lround(blocking / chunk_s)));
  auto compute = [&](const std::function<void()>& between) {
    for (int i = 0; i < chunks; ++i) {
      chunk();
      between();
    }
  };
  const double alone = median_seconds(config.repeats, reset, [&] { compute([] {}); });
  const double silent = median_seconds(config.repeats, reset, [&] {
    auto work = comm.all_reduce_async(bucket, ReduceOp::kSum);
    compute([] {});
    work->wait();
  });
  const double testing = median_seconds(config.repeats, reset, [&] {
    auto work = comm.all_reduce_async(bucket, ReduceOp::kSum);
    compute([&] { work->test(); });
    work->wait();
  });
  // The bucket holds the sum of `size` ones after every variant; check the last.
  if (bucket[0].item<float>() != static_cast<float>(comm.size())) {
    throw mlagpt::Error(fmt::format("the all-reduce gave {} instead of {}", bucket[0].item<float>(), comm.size()));
  }

  auto hidden = [&](double overlapped) { return (blocking + alone - overlapped) / blocking; };
  if (comm.rank() == 0) {
    fmt::print("mpi_overlap_bench: {} ranks, {:.1f} MB float32 bucket, {} chunks of a {}x{} mm ({:.3f} ms each)\n",
               comm.size(), config.mb, chunks, config.matrix, config.matrix, chunk_s * 1e3);
    fmt::print("  (a) blocking all_reduce          {:8.2f} ms\n", blocking * 1e3);
    fmt::print("  (b) compute alone                {:8.2f} ms\n", alone * 1e3);
    fmt::print("  (c) async, no MPI call, wait     {:8.2f} ms   hidden share {:+.2f}\n", silent * 1e3, hidden(silent));
    fmt::print("  (d) async, test() every chunk    {:8.2f} ms   hidden share {:+.2f}\n", testing * 1e3,
               hidden(testing));
    fmt::print(
        "{{\"ranks\": {}, \"mb\": {}, \"chunks\": {}, \"chunk_ms\": {:.4f}, \"blocking_ms\": {:.3f}, "
        "\"compute_ms\": {:.3f}, \"async_silent_ms\": {:.3f}, \"async_test_ms\": {:.3f}, \"hidden_silent\": {:.3f}, "
        "\"hidden_test\": {:.3f}}}\n",
        comm.size(), config.mb, chunks, chunk_s * 1e3, blocking * 1e3, alone * 1e3, silent * 1e3, testing * 1e3,
        hidden(silent), hidden(testing));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  mlagpt::launch::Runtime runtime(&argc, &argv);
  CLI::App app("mpi_overlap_bench: how much of a non-blocking MPI all-reduce hides behind CPU compute (issue 10)");
  BenchConfig config;
  app.add_option("--mb", config.mb, "bucket size in MB (float32)")->check(CLI::PositiveNumber);
  app.add_option("--matrix", config.matrix, "one compute chunk is an [n, n] x [n, n] at::mm")
      ->check(CLI::PositiveNumber);
  app.add_option("--repeats", config.repeats, "timed runs per case (the median is reported)")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  try {
    if (!runtime.info().mpi || runtime.info().world_size < 2) {
      throw mlagpt::ConfigError("mpi_overlap_bench measures MPI: run it under mpiexec with at least 2 ranks");
    }
    mlagpt::launch::MpiCommunicator comm(MPI_COMM_WORLD);
    return run(config, comm);
  } catch (const std::exception& e) {
    fmt::print(stderr, "mpi_overlap_bench: {}\n", e.what());
    runtime.abort(1);
    return 1;
  }
}
