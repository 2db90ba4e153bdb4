// Does Open MPI progress a non-blocking all-reduce while the caller computes on the CPU (issue 10)? Not a CTest
// test: timings on a shared machine mean little.
//
// For one float32 bucket of --mb MB (25 by default, a gradient bucket), under mpiexec, through MpiCommunicator:
//   (a) the blocking all_reduce alone;
//   (b) the compute alone: chunks of one [--matrix, --matrix] at::mm each (about 1 ms on one thread at 256), as many
//       chunks as take about (a);
//   (c) all_reduce_async, the compute with no MPI call at all, wait();
//   (d) the same, with test() after every chunk;
//   (e) all_reduce_async and wait() at once: the non-blocking algorithm alone (libnbc's, not the tuned blocking
//       one), so that (e + b - d) / e says how much of the async collective's own time (d) hides.
// The hidden share of the communication is (a + b - x) / a for x = (c), (d): 1 when the all-reduce is entirely hidden
// behind the compute, 0 when it runs after it. Each time is the slowest rank's; the four run in turn in each of
// --repeats rounds (after an untimed one), and the medians over the rounds are reported (the hidden shares computed
// per round). Every rank uses one intra-op thread.
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

// The slowest rank's time of one run of `body`; the ranks start together.
double timed(const std::function<void()>& body) {
  MLAGPT_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  const auto start = Clock::now();
  body();
  return slowest(std::chrono::duration<double>(Clock::now() - start).count());
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

int run(const BenchConfig& config, Communicator& comm) {
  at::set_num_threads(1);
  const auto numel = static_cast<int64_t>(config.mb * 1e6 / 4);
  at::Tensor bucket = at::ones({numel}, at::kFloat);
  const at::Tensor a = at::randn({config.matrix, config.matrix}, at::kFloat);
  const at::Tensor b = at::randn({config.matrix, config.matrix}, at::kFloat);
  at::Tensor sink = at::mm(a, b);
  auto chunk = [&] { sink = at::mm(a, b); };

  // Calibration: as many chunks as the blocking all-reduce takes (the times are the slowest rank's, so every rank
  // runs the same number).
  std::vector<double> chunk_times;
  std::vector<double> blocking_times;
  for (int i = 0; i < config.repeats; ++i) {
    chunk_times.push_back(timed(chunk));
    bucket.fill_(1.0F);
    blocking_times.push_back(timed([&] { comm.all_reduce(bucket, ReduceOp::kSum); }));
  }
  const double chunk_s = median(chunk_times);
  const int chunks = std::max(1, static_cast<int>(std::lround(median(blocking_times) / chunk_s)));
  auto compute = [&](const std::function<void()>& between) {
    for (int i = 0; i < chunks; ++i) {
      chunk();
      between();
    }
  };

  // The four variants run in turn in every round, so that a change of the machine's load between rounds affects
  // them alike; the hidden shares are computed per round and their median reported.
  enum { kBlocking, kCompute, kSilent, kTesting, kAsyncAlone, kVariants };
  std::vector<std::vector<double>> times(kVariants);
  std::vector<double> hidden_silent;
  std::vector<double> hidden_testing;
  std::vector<double> hidden_testing_of_async;
  for (int round = 0; round <= config.repeats; ++round) {
    double t[kVariants];
    bucket.fill_(1.0F);
    t[kBlocking] = timed([&] { comm.all_reduce(bucket, ReduceOp::kSum); });
    t[kCompute] = timed([&] { compute([] {}); });
    bucket.fill_(1.0F);
    t[kSilent] = timed([&] {
      auto work = comm.all_reduce_async(bucket, ReduceOp::kSum);
      compute([] {});
      work->wait();
    });
    bucket.fill_(1.0F);
    t[kTesting] = timed([&] {
      auto work = comm.all_reduce_async(bucket, ReduceOp::kSum);
      compute([&] { work->test(); });
      work->wait();
    });
    bucket.fill_(1.0F);
    t[kAsyncAlone] = timed([&] { comm.all_reduce_async(bucket, ReduceOp::kSum)->wait(); });
    if (bucket[0].item<float>() != static_cast<float>(comm.size())) {
      throw mlagpt::Error(fmt::format("the all-reduce gave {} instead of {}", bucket[0].item<float>(), comm.size()));
    }
    if (round == 0) {
      continue;  // untimed warm-up round
    }
    for (int v = 0; v < kVariants; ++v) {
      times[v].push_back(t[v]);
    }
    hidden_silent.push_back((t[kBlocking] + t[kCompute] - t[kSilent]) / t[kBlocking]);
    hidden_testing.push_back((t[kBlocking] + t[kCompute] - t[kTesting]) / t[kBlocking]);
    hidden_testing_of_async.push_back((t[kAsyncAlone] + t[kCompute] - t[kTesting]) / t[kAsyncAlone]);
  }

  if (comm.rank() == 0) {
    const double blocking = median(times[kBlocking]);
    const double alone = median(times[kCompute]);
    const double silent = median(times[kSilent]);
    const double testing = median(times[kTesting]);
    const double async_alone = median(times[kAsyncAlone]);
    auto range = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return fmt::format("[{:+.2f}, {:+.2f}]", v.front(), v.back());
    };
    fmt::print(
        "mpi_overlap_bench: {} ranks, {:.1f} MB float32 bucket, {} chunks of a {}x{} mm ({:.3f} ms each), {} rounds\n",
        comm.size(), config.mb, chunks, config.matrix, config.matrix, chunk_s * 1e3, config.repeats);
    fmt::print("  (a) blocking all_reduce          {:8.2f} ms\n", blocking * 1e3);
    fmt::print("  (b) compute alone                {:8.2f} ms\n", alone * 1e3);
    fmt::print("  (c) async, no MPI call, wait     {:8.2f} ms   hidden share {:+.2f} (rounds {})\n", silent * 1e3,
               median(hidden_silent), range(hidden_silent));
    fmt::print("  (d) async, test() every chunk    {:8.2f} ms   hidden share {:+.2f} (rounds {})\n", testing * 1e3,
               median(hidden_testing), range(hidden_testing));
    fmt::print("  (e) async alone, wait at once    {:8.2f} ms   (d) against (e) instead of (a): {:+.2f} (rounds {})\n",
               async_alone * 1e3, median(hidden_testing_of_async), range(hidden_testing_of_async));
    fmt::print(
        "{{\"ranks\": {}, \"mb\": {}, \"chunks\": {}, \"chunk_ms\": {:.4f}, \"blocking_ms\": {:.3f}, "
        "\"compute_ms\": {:.3f}, \"async_silent_ms\": {:.3f}, \"async_test_ms\": {:.3f}, \"hidden_silent\": {:.3f}, "
        "\"async_alone_ms\": {:.3f}, \"hidden_test\": {:.3f}, \"hidden_test_of_async\": {:.3f}}}\n",
        comm.size(), config.mb, chunks, chunk_s * 1e3, blocking * 1e3, alone * 1e3, silent * 1e3, testing * 1e3,
        median(hidden_silent), async_alone * 1e3, median(hidden_testing), median(hidden_testing_of_async));
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
