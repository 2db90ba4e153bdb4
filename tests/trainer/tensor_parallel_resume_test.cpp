// Checkpoints of a tensor-parallel run resume on other meshes (issue 11). `mlagpt train` runs under mpiexec at
// dp 2 x tp 2 (4 ranks) to step 4, and that run continues to step 8 at dp 2 x tp 2 again, dp 1 x tp 2, dp 2 x tp 1,
// dp 4 x tp 1 and in one process, each with the same global batch. On the same mesh the continued losses and
// gradient norms equal the uninterrupted dp 2 x tp 2 run's exactly; on the others they agree within 1e-5 relative
// (sums in another order). `eval` and `sample`, which run in one process, load the tensor-parallel checkpoint:
// eval reproduces the validation loss the run logged at that step.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <regex>
#include <tuple>

#include "support/small_dataset.h"
#include "support/temp_dir.h"
#include "support/training_curve.h"

namespace fs = std::filesystem;

namespace {

using Curve = mlagpt::testing::TrainingCurve;

class TensorParallelResume : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<mlagpt::testing::TempDir>();
    mlagpt::testing::prepare_small_byte_dataset(dir_->path());
  }
  static void TearDownTestSuite() { dir_.reset(); }

  // Trains run `run` to `max_steps` on `ranks` processes split into tensor-parallel groups of `tp`, with a global
  // batch of kGlobalBatch; resumes the run's newest checkpoint when there is one.
  static void train(const std::string& run, int ranks, int tp, int64_t max_steps) {
    std::string command = ranks > 1 ? fmt::format("{} -n {} ", MLAGPT_MPIEXEC, ranks) : "";
    // The byte vocabulary (257) is padded to 320, which 2 and 4 divide; the MLP's 88 hidden units and 4 heads too.
    command += fmt::format(
        "{} train --resume auto --run.out_dir={} --run.device=cpu --run.threads=1 --run.max_steps={} "
        "--run.log_every=100 --data.dir={} --data.batch_size={} --data.seq_len=32 --model.block_size=32 "
        "--model.n_layer=2 --model.n_embd=32 --model.n_head=4 --model.kv_lora_rank=16 --model.qk_nope_head_dim=8 "
        "--model.qk_rope_head_dim=4 --model.v_head_dim=8 --optim.lr=3e-3 --optim.grad_accum=2 "
        "--schedule.warmup_steps=2 --schedule.decay_steps=8 --schedule.min_lr=3e-4 --eval.every=4 --eval.batches=2 "
        "--checkpoint.every=4 --parallel.tp={} 2>&1",
        MLAGPT_EXECUTABLE, (*dir_ / run).string(), max_steps, (*dir_ / "data").string(), kGlobalBatch / (ranks / tp),
        tp);
    int status = 0;
    const std::string output = mlagpt::testing::run_command(command, &status);
    ASSERT_EQ(status, 0) << command << "\n" << output;
  }

  static Curve curve(const std::string& run) { return mlagpt::testing::read_training_curve(*dir_ / run); }

  static std::string mlagpt(const std::string& args, int* status) {
    return mlagpt::testing::run_command(fmt::format("{} {} 2>&1", MLAGPT_EXECUTABLE, args), status);
  }

  static constexpr int kGlobalBatch = 4;
  static constexpr int64_t kSteps = 8;
  static inline std::unique_ptr<mlagpt::testing::TempDir> dir_;
};

}  // namespace

TEST_F(TensorParallelResume, ACheckpointOfDp2Tp2ResumesOnEveryMesh) {
  train("straight", 4, 2, kSteps);
  ASSERT_FALSE(HasFatalFailure());
  train("half", 4, 2, kSteps / 2);
  ASSERT_FALSE(HasFatalFailure());
  const Curve straight = curve("straight");
  ASSERT_EQ(straight.train.size(), static_cast<size_t>(kSteps));
  for (const auto& [run, ranks, tp] : std::vector<std::tuple<std::string, int, int>>{
           {"dp2_tp2", 4, 2}, {"dp1_tp2", 2, 2}, {"dp2_tp1", 2, 1}, {"dp4_tp1", 4, 1}, {"one_process", 1, 1}}) {
    SCOPED_TRACE(run);
    fs::copy(*dir_ / "half", *dir_ / run, fs::copy_options::recursive);
    train(run, ranks, tp, kSteps);
    const Curve resumed = curve(run);
    ASSERT_EQ(resumed.train.size(), static_cast<size_t>(kSteps));
    double worst = 0;
    for (size_t i = kSteps / 2; i < resumed.train.size(); ++i) {
      if (run == "dp2_tp2") {
        EXPECT_EQ(resumed.train[i], straight.train[i]) << "loss of step " << i + 1;
        EXPECT_EQ(resumed.grad_norm[i], straight.grad_norm[i]) << "gradient norm of step " << i + 1;
      }
      worst = std::max(worst, std::abs(resumed.train[i] - straight.train[i]) / std::abs(straight.train[i]));
      worst = std::max(worst, std::abs(resumed.grad_norm[i] - straight.grad_norm[i]) / std::abs(straight.grad_norm[i]));
    }
    EXPECT_LE(worst, 1e-5);
    std::printf("[resume] dp 2 x tp 2 at step %lld, then %s: continued losses and gradient norms within %.2e\n",
                static_cast<long long>(kSteps / 2), run.c_str(), worst);
  }
}

TEST_F(TensorParallelResume, EvalAndSampleLoadATensorParallelCheckpointInOneProcess) {
  if (!fs::exists(*dir_ / "straight" / "metrics.jsonl")) {
    train("straight", 4, 2, kSteps);
    ASSERT_FALSE(HasFatalFailure());
  }
  const fs::path checkpoint = *dir_ / "straight" / "checkpoints" / fmt::format("step_{:08d}", kSteps);
  int status = 0;
  // The run evaluated eval.batches = 2 batches on each of its 2 data-parallel ranks: 4 batches in one process.
  const std::string eval = mlagpt(fmt::format("eval --ckpt {} --batches 4", checkpoint.string()), &status);
  ASSERT_EQ(status, 0) << eval;
  std::smatch match;
  ASSERT_TRUE(std::regex_search(eval, match, std::regex(R"(val loss ([0-9.]+))"))) << eval;
  const double logged = curve("straight").eval.back();
  EXPECT_NEAR(std::stod(match[1]), logged, 1e-5 * logged) << eval;

  const std::string sample =
      mlagpt(fmt::format("sample --ckpt {} --prompt 'Once' --max-new-tokens 12 --temperature 0", checkpoint.string()),
             &status);
  ASSERT_EQ(status, 0) << sample;
  EXPECT_EQ(sample.rfind("Once", 0), 0U) << sample;
  EXPECT_GT(sample.size(), std::string("Once").size()) << sample;
}
