// How much of the gradient reduction the bucketed reducer hides behind backward (issue 10). Not a CTest test:
// timings on a shared machine mean little.
//
// Under mpiexec, every rank builds the same model (MLA, --layers x --width, the tiny configs' shape scaled up) and
// runs TrainStep (FlatAdamW + GradReducer, parallel.bucket_mb = --bucket-mb) on its own random batches, alternating
// in every round a step with the buckets reduced during backward (overlap) and one with all of them reduced after
// it. Per step it records the slowest rank's step time and the host time finish() spent waiting for the
// reductions (the communication left exposed). Reported, as medians over --rounds rounds after one untimed round:
//   step time with overlap / step time after backward (below 1 when overlap pays),
//   exposed communication in both modes, and the share hidden = 1 - exposed(overlap) / exposed(after).
// Every rank uses --threads intra-op threads (1: two ranks on two cores).
//
// Run (the environment is tests/CMakeLists.txt's MLAGPT_MPI_TEST_ENV):
//   export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
//   export OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1
//   mpiexec -n 2 build/ci/tests/bench/step_overlap_bench [--layers 4] [--width 256] [--bucket-mb 1] [--rounds 7]
#include <ATen/Parallel.h>
#include <ATen/ops/randint.h>
#include <fmt/format.h>
#include <mpi.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <exception>
#include <vector>

#include "bench_models.h"
#include "launch/mpi_communicator.h"
#include "launch/runtime.h"
#include "model/gpt.h"
#include "trainer/optimizer.h"
#include "trainer/train_step.h"

namespace {

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

double slowest(double seconds) {
  double out = 0;
  MPI_Allreduce(&seconds, &out, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return out;
}

struct Setup {
  Setup(const mlagpt::trainer::TrainConfig& config, mlagpt::launch::Communicator& comm, bool overlap)
      : model((at::manual_seed(1), config.model)),
        optimizer(
            mlagpt::trainer::adamw_parameters(model), mlagpt::trainer::adamw_settings(config.optim),
            mlagpt::trainer::FlatOptions{.bucket_bytes = static_cast<int64_t>(config.parallel.bucket_mb * (1 << 20))},
            comm),
        reducer(optimizer, overlap),
        step(model, optimizer, reducer, config, comm) {}
  mlagpt::model::Gpt model;
  mlagpt::trainer::FlatAdamW optimizer;
  mlagpt::trainer::GradReducer reducer;
  mlagpt::trainer::TrainStep step;
};

}  // namespace

int main(int argc, char** argv) {
  mlagpt::launch::Runtime runtime(&argc, &argv, /*force_mpi=*/true);
  CLI::App app{"Step time with the gradient reduction overlapped with backward, and after it"};
  int64_t layers = 4;
  int64_t width = 256;
  double bucket_mb = 1;
  int rounds = 7;
  int threads = 1;
  int64_t batch = 8;
  int64_t seq_len = 128;
  app.add_option("--layers", layers);
  app.add_option("--width", width);
  app.add_option("--bucket-mb", bucket_mb);
  app.add_option("--rounds", rounds);
  app.add_option("--threads", threads);
  app.add_option("--batch", batch);
  app.add_option("--seq-len", seq_len);
  CLI11_PARSE(app, argc, argv);
  try {
    at::set_num_threads(threads);
    mlagpt::launch::MpiCommunicator comm(MPI_COMM_WORLD);
    mlagpt::trainer::TrainConfig config;
    config.model = mlagpt::bench::scaled_mla_config(layers, width, seq_len);
    config.data.dir = "unused";
    config.schedule.warmup_steps = 1;
    config.run.max_steps = 1000;
    config.parallel.bucket_mb = bucket_mb;
    Setup overlapped(config, comm, /*overlap=*/true);
    Setup after(config, comm, /*overlap=*/false);
    int64_t calls = 0;
    const auto next = [&] {
      at::Generator generator = at::detail::createCPUGenerator(static_cast<uint64_t>(1000 * comm.rank() + calls++));
      return mlagpt::trainer::MicroBatch{at::randint(config.model.vocab_size, {batch, seq_len}, generator, at::kLong),
                                         at::randint(config.model.vocab_size, {batch, seq_len}, generator, at::kLong)};
    };
    std::vector<double> step_overlap, step_after, exposed_overlap, exposed_after;
    int64_t started = 0;
    for (int round = 0; round <= rounds; ++round) {
      for (Setup* setup : {&overlapped, &after}) {
        comm.barrier();
        const auto start = std::chrono::steady_clock::now();
        mlagpt::trainer::read_step_reports({setup->step.run(round, next)});
        const double seconds = slowest(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        const double exposed = slowest(setup->reducer.last_finish_seconds());
        if (round == 0) {
          continue;
        }
        (setup == &overlapped ? step_overlap : step_after).push_back(seconds);
        (setup == &overlapped ? exposed_overlap : exposed_after).push_back(exposed);
        if (setup == &overlapped) {
          started = setup->reducer.started_during_backward();
        }
      }
    }
    if (comm.rank() == 0) {
      const auto& layout = overlapped.optimizer.layout();
      const double overlap_s = median(step_overlap);
      const double after_s = median(step_after);
      const double exposed_o = median(exposed_overlap);
      const double exposed_a = median(exposed_after);
      fmt::print(
          "{} ranks, {} threads each; model {} layers x {} wide, {:.2f} M parameters in {} buckets of <= {} MB; batch "
          "{} x {} tokens, 2 micro-batches\n",
          comm.size(), threads, layers, width, static_cast<double>(layout.parameter_numel()) / 1e6,
          layout.buckets.size(), bucket_mb, batch, seq_len);
      fmt::print("step, reduction during backward: {:.1f} ms ({} of {} buckets started before backward ended)\n",
                 overlap_s * 1e3, started, layout.buckets.size());
      fmt::print("step, reduction after backward:  {:.1f} ms\n", after_s * 1e3);
      fmt::print("ratio overlap / after: {:.3f}\n", overlap_s / after_s);
      fmt::print("exposed communication: {:.1f} ms with overlap, {:.1f} ms after backward; hidden share {:.2f}\n",
                 exposed_o * 1e3, exposed_a * 1e3, exposed_a > 0 ? 1.0 - exposed_o / exposed_a : 0.0);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "step_overlap_bench: {}\n", e.what());
    runtime.abort(1);
    return 1;
  }
  return 0;
}
