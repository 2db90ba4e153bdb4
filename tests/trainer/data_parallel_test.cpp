// Data-parallel `mlagpt train` under mpiexec against one process. R ranks with batch B see the same global samples
// as one process with batch R * B (the loader deals each global batch out by rank), and gradients are averaged over
// the ranks, so the two runs have the same losses, gradient norms, learning rates, evaluations and final weights up
// to float rounding (sums in another order). Losses alone would not show gradients summed instead of averaged:
// clipping rescales them and AdamW's update hardly depends on their scale, so the gradient norm (logged before
// clipping) is compared too, and once without clipping. A checkpoint carries the global sample position, not a
// per-rank one, so a run checkpointed by 2 ranks continues in 1 process, and the other way round, as if it had never
// changed; with dropout, a resumed run draws the masks it would have drawn. ZeRO-1 (optimizer state sharded over
// the ranks) trains the same, and its sharded checkpoints resume on other rank counts, with or without ZeRO-1.
// Runs are shared between the tests of the suite: each is trained once.
#include <ATen/ops/allclose.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <set>
#include <tuple>

#include "support/small_dataset.h"
#include "support/temp_dir.h"
#include "support/training_curve.h"
#include "trainer/checkpointer.h"

namespace fs = std::filesystem;

namespace {

using Curve = mlagpt::testing::TrainingCurve;

class DataParallel : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<mlagpt::testing::TempDir>();
    mlagpt::testing::prepare_small_byte_dataset(dir_->path());
  }
  static void TearDownTestSuite() {
    dir_.reset();
    trained_.clear();
  }

  // Trains run `run` to `max_steps` on `ranks` processes (mpiexec when more than one), each with a batch of
  // kGlobalBatch / ranks; resumes the run's newest checkpoint when there is one. Fails the test on a non-zero exit.
  static void train(const std::string& run, int ranks, int64_t max_steps, const std::string& extra = "") {
    std::string command = ranks > 1 ? fmt::format("{} -n {} ", MLAGPT_MPIEXEC, ranks) : "";
    command += fmt::format(
        "{} train --resume auto --run.out_dir={} --run.device=cpu --run.threads=1 --run.max_steps={} "
        "--run.log_every=100 --data.dir={} --data.batch_size={} --data.seq_len=32 --model.vocab_size=257 "
        "--model.block_size=32 --model.n_layer=2 --model.n_embd=32 --model.n_head=4 --model.kv_lora_rank=16 "
        "--model.qk_nope_head_dim=8 --model.qk_rope_head_dim=4 --model.v_head_dim=8 --optim.lr=3e-3 "
        "--optim.grad_accum=2 --schedule.warmup_steps=2 --schedule.decay_steps=8 --schedule.min_lr=3e-4 "
        "--eval.every=4 --eval.batches=2 --checkpoint.every=4 {} 2>&1",
        MLAGPT_EXECUTABLE, (*dir_ / run).string(), max_steps, (*dir_ / "data").string(), kGlobalBatch / ranks, extra);
    int status = 0;
    const std::string output = mlagpt::testing::run_command(command, &status);
    ASSERT_EQ(status, 0) << command << "\n" << output;
  }

  // Run `run` trained straight through to kSteps on `ranks` processes, once for the whole suite.
  static void trained(const std::string& run, int ranks, const std::string& extra = "") {
    if (trained_.count(run) != 0) {
      return;
    }
    train(run, ranks, kSteps, extra);
    if (!HasFatalFailure()) {
      trained_.insert(run);
    }
  }

  static Curve curve(const std::string& run) { return mlagpt::testing::read_training_curve(*dir_ / run); }

  // The final weights of run `run`, from its newest checkpoint.
  static std::vector<at::Tensor> weights(const std::string& run) {
    const fs::path checkpoint = *dir_ / run / "checkpoints" / fmt::format("step_{:08d}", kSteps);
    mlagpt::model::Gpt model(mlagpt::trainer::Checkpointer::stored_config(checkpoint).model);
    mlagpt::trainer::Checkpointer::load_weights(checkpoint, model);
    return model.parameters();
  }

  // Runs `actual` and `expected` agree step for step and weight for weight, up to the rounding of float sums.
  static void expect_same_training(const std::string& actual, const std::string& expected) {
    const Curve a = curve(actual);
    const Curve b = curve(expected);
    ASSERT_EQ(a.train.size(), static_cast<size_t>(kSteps));
    ASSERT_EQ(b.train.size(), static_cast<size_t>(kSteps));
    ASSERT_EQ(a.eval.size(), b.eval.size());
    for (size_t i = 0; i < a.train.size(); ++i) {
      EXPECT_NEAR(a.train[i], b.train[i], kTolerance * std::abs(b.train[i])) << "loss of step " << i + 1;
      EXPECT_NEAR(a.grad_norm[i], b.grad_norm[i], kTolerance * std::abs(b.grad_norm[i]))
          << "gradient norm of step " << i + 1;
      EXPECT_DOUBLE_EQ(a.lr[i], b.lr[i]) << "learning rate of step " << i + 1;
    }
    for (size_t i = 0; i < a.eval.size(); ++i) {
      EXPECT_NEAR(a.eval[i], b.eval[i], kTolerance * std::abs(b.eval[i])) << "evaluation " << i;
    }
    const std::vector<at::Tensor> wa = weights(actual);
    const std::vector<at::Tensor> wb = weights(expected);
    ASSERT_EQ(wa.size(), wb.size());
    for (size_t i = 0; i < wa.size(); ++i) {
      EXPECT_TRUE(at::allclose(wa[i], wb[i], kTolerance, kTolerance)) << "parameter " << i;
    }
  }

  static constexpr int kGlobalBatch = 4;
  static constexpr int64_t kSteps = 8;
  // Relative: float32 sums in another order differ in the 7th digit; 8 AdamW steps at lr 3e-3 amplify that little.
  static constexpr double kTolerance = 1e-4;
  static inline std::unique_ptr<mlagpt::testing::TempDir> dir_;
  static inline std::set<std::string> trained_;  // runs trained straight through by trained()
};

}  // namespace

TEST_F(DataParallel, TwoRanksTrainAsOneProcessWithTheSameGlobalBatch) {
  trained("one", 1);
  trained("two", 2);
  expect_same_training("two", "one");
}

TEST_F(DataParallel, FourRanksTrainAsOneProcessWithTheSameGlobalBatch) {
  trained("one", 1);
  trained("four", 4);
  expect_same_training("four", "one");
}

// Without clipping the averaged gradient goes into AdamW as it is; 2 ranks suffice to see a wrong scale.
TEST_F(DataParallel, TwoRanksTrainAsOneProcessWithoutClipping) {
  trained("one_unclipped", 1, "--optim.grad_clip=0");
  trained("two_unclipped", 2, "--optim.grad_clip=0");
  expect_same_training("two_unclipped", "one_unclipped");
}

TEST_F(DataParallel, ACheckpointResumesOnAnotherNumberOfRanks) {
  trained("one", 1);
  train("two_then_one", 2, kSteps / 2);
  train("two_then_one", 1, kSteps);
  expect_same_training("two_then_one", "one");
  train("one_then_two", 1, kSteps / 2);
  train("one_then_two", 2, kSteps);
  expect_same_training("one_then_two", "one");
}

// With dropout, every rank's generator is seeded by (seed, rank, step) at each step, while only rank 0 writes the
// checkpoint: 2 ranks resumed from step 4 must still draw what they drew straight through.
TEST_F(DataParallel, TwoRanksWithDropoutResumeExactly) {
  trained("straight", 2, "--model.dropout=0.2");
  train("resumed", 2, kSteps / 2, "--model.dropout=0.2");
  train("resumed", 2, kSteps, "--model.dropout=0.2");
  const Curve a = curve("resumed");
  const Curve b = curve("straight");
  ASSERT_EQ(a.train.size(), static_cast<size_t>(kSteps));
  EXPECT_EQ(a.train, b.train);
  EXPECT_EQ(a.grad_norm, b.grad_norm);
  EXPECT_EQ(a.lr, b.lr);
  EXPECT_EQ(a.eval, b.eval);
}

// ZeRO-1 shards the optimizer state; the training is the same as one process's with the same global batch.
TEST_F(DataParallel, ZeroOneOnTwoAndFourRanksTrainsAsOneProcess) {
  trained("one", 1);
  trained("two_zero", 2, "--parallel.zero=1");
  expect_same_training("two_zero", "one");
  trained("four_zero", 4, "--parallel.zero=1");
  expect_same_training("four_zero", "one");
}

// A checkpoint written by 4 ranks with ZeRO-1 (each rank's file holds its shards) continues on 4 ranks with ZeRO-1
// exactly as the uninterrupted run, and on 2 ranks without ZeRO and on 1 process up to the rounding of sums in
// another order (1e-5 relative on the continued losses).
TEST_F(DataParallel, AZeroOneCheckpointOfFourRanksResumesOnFourTwoAndOne) {
  trained("four_zero", 4, "--parallel.zero=1");
  const Curve straight = curve("four_zero");
  for (const auto& [run, ranks, extra] : std::vector<std::tuple<std::string, int, std::string>>{
           {"zero4_then_zero4", 4, "--parallel.zero=1"}, {"zero4_then_2", 2, ""}, {"zero4_then_1", 1, ""}}) {
    SCOPED_TRACE(run);
    train(run, 4, kSteps / 2, "--parallel.zero=1");
    train(run, ranks, kSteps, extra);
    const Curve resumed = curve(run);
    ASSERT_EQ(resumed.train.size(), static_cast<size_t>(kSteps));
    double worst = 0;
    for (size_t i = kSteps / 2; i < resumed.train.size(); ++i) {
      if (ranks == 4) {
        EXPECT_EQ(resumed.train[i], straight.train[i]) << "loss of step " << i + 1;
        EXPECT_EQ(resumed.grad_norm[i], straight.grad_norm[i]) << "gradient norm of step " << i + 1;
      }
      worst = std::max(worst, std::abs(resumed.train[i] - straight.train[i]) / std::abs(straight.train[i]));
    }
    EXPECT_LE(worst, 1e-5);
    std::printf("[resume] %s: continued losses within %.2e of the uninterrupted 4-rank ZeRO-1 run\n", run.c_str(),
                worst);
    expect_same_training(run, "four_zero");
  }
}
