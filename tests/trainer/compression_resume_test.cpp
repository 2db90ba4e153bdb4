// Compression during training, end to end through `mlagpt train` (issue 12). A tiny MLA run compresses its MLP
// projections and kv_up to rank 6 after steps 3 and 6 (factorize, then re-factorize from the factors):
//   - stopped at step 4 and resumed to step 8, it equals the run that compressed without stopping, bitwise;
//   - that checkpoint resumes on 2 data-parallel ranks and at tp = 2, within 1e-5 relative of the one-process run;
//   - the whole run at dp = 2 (projections shared out among the ranks; with and without ZeRO-1) and at tp = 2 (each
//     projection factored from the shards the ranks hold) agrees with one process within 1e-5;
//   - metrics.jsonl records every pass and layer; `eval` reproduces the run's last validation loss from its
//     compressed checkpoint and `sample` generates from it;
//   - `mlagpt compress` turns an uncompressed checkpoint into a compressed one that eval loads (the loss it
//     printed) and `train --resume` continues;
//   - `mlagpt convert --to-mla` turns an MHA checkpoint into an MLA one that eval loads and training fine-tunes
//     with the overrides it prints.
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

class CompressionResume : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<mlagpt::testing::TempDir>();
    mlagpt::testing::prepare_small_byte_dataset(dir_->path());
  }
  static void TearDownTestSuite() { dir_.reset(); }

  // Trains run `run` to `max_steps` on `ranks` processes in tensor-parallel groups of `tp`, global batch 4,
  // resuming its newest checkpoint when there is one; `compress` = false leaves [compress] out.
  static std::string train(const std::string& run, int ranks, int tp, int64_t max_steps, bool compress = true,
                           const std::string& extra = "") {
    std::string command = ranks > 1 ? fmt::format("{} -n {} ", MLAGPT_MPIEXEC, ranks) : "";
    command += fmt::format(
        "{} train --resume auto --run.out_dir={} --run.device=cpu --run.threads=1 --run.max_steps={} "
        "--run.log_every=100 --data.dir={} --data.batch_size={} --data.seq_len=32 --model.block_size=32 "
        "--model.n_layer=2 --model.n_embd=32 --model.n_head=4 --model.kv_lora_rank=16 --model.qk_nope_head_dim=8 "
        "--model.qk_rope_head_dim=4 --model.v_head_dim=8 --optim.lr=3e-3 --optim.grad_accum=2 "
        "--schedule.warmup_steps=2 --schedule.decay_steps=8 --schedule.min_lr=3e-4 --eval.every=4 --eval.batches=2 "
        "--checkpoint.every=4 --parallel.tp={} {} {} 2>&1",
        MLAGPT_EXECUTABLE, (*dir_ / run).string(), max_steps, (*dir_ / "data").string(), 4 / (ranks / tp), tp,
        compress ? "--compress.every=3 '--compress.targets=blocks.*.mlp.*,blocks.*.attn.kv_up' --compress.rank=6" : "",
        extra);
    int status = 0;
    const std::string output = mlagpt::testing::run_command(command, &status);
    EXPECT_EQ(status, 0) << command << "\n" << output;
    return output;
  }

  static Curve curve(const std::string& run) { return mlagpt::testing::read_training_curve(*dir_ / run); }

  static std::string mlagpt(const std::string& args, int* status) {
    return mlagpt::testing::run_command(fmt::format("{} {} 2>&1", MLAGPT_EXECUTABLE, args), status);
  }

  // The worst relative difference of losses and gradient norms of steps [from, 8).
  static double worst_difference(const Curve& a, const Curve& b, size_t from) {
    double worst = 0;
    for (size_t i = from; i < kSteps; ++i) {
      worst = std::max(worst, std::abs(a.train[i] - b.train[i]) / std::abs(b.train[i]));
      worst = std::max(worst, std::abs(a.grad_norm[i] - b.grad_norm[i]) / std::abs(b.grad_norm[i]));
    }
    return worst;
  }

  static void train_straight_once() {
    if (!fs::exists(*dir_ / "straight" / "metrics.jsonl")) {
      train("straight", 1, 1, kSteps);
    }
  }

  static constexpr size_t kSteps = 8;
  static inline std::unique_ptr<mlagpt::testing::TempDir> dir_;
};

}  // namespace

TEST_F(CompressionResume, ResumingACompressedRunEqualsTheRunThatDidNotStop) {
  train_straight_once();
  train("half", 1, 1, kSteps / 2);
  ASSERT_FALSE(HasFailure());
  const Curve straight = curve("straight");
  ASSERT_EQ(straight.train.size(), kSteps);
  for (const auto& [run, ranks, tp] :
       std::vector<std::tuple<std::string, int, int>>{{"one_process", 1, 1}, {"dp2", 2, 1}, {"tp2", 2, 2}}) {
    SCOPED_TRACE(run);
    fs::copy(*dir_ / "half", *dir_ / run, fs::copy_options::recursive);
    const std::string output = train(run, ranks, tp, kSteps);
    EXPECT_NE(output.find("the checkpoint's model is compressed"), std::string::npos) << output;
    const Curve resumed = curve(run);
    ASSERT_EQ(resumed.train.size(), kSteps);
    if (run == "one_process") {
      for (size_t i = kSteps / 2; i < kSteps; ++i) {
        EXPECT_EQ(resumed.train[i], straight.train[i]) << "loss of step " << i + 1;
        EXPECT_EQ(resumed.grad_norm[i], straight.grad_norm[i]) << "gradient norm of step " << i + 1;
      }
      EXPECT_EQ(resumed.eval.back(), straight.eval.back());
    }
    const double worst = worst_difference(resumed, straight, kSteps / 2);
    EXPECT_LE(worst, 1e-5);
    std::printf(
        "[compress] compressed at step 3, stopped at 4, resumed %s: steps 5-8 (a second pass at 6) within "
        "%.2e of the run that did not stop\n",
        run.c_str(), worst);
  }
}

TEST_F(CompressionResume, DataAndTensorParallelPassesAgreeWithOneProcess) {
  train_straight_once();
  const Curve straight = curve("straight");
  // ZeRO-1: the optimizer state is sharded, and the pass gathers the moments, rebuilds the shards and keeps them.
  for (const auto& [run, ranks, tp, extra] : std::vector<std::tuple<std::string, int, int, std::string>>{
           {"dp2_straight", 2, 1, ""}, {"dp2_zero_straight", 2, 1, "--parallel.zero=1"}, {"tp2_straight", 2, 2, ""}}) {
    SCOPED_TRACE(run);
    train(run, ranks, tp, kSteps, true, extra);
    const Curve other = curve(run);
    ASSERT_EQ(other.train.size(), kSteps);
    const double worst = worst_difference(other, straight, 0);
    EXPECT_LE(worst, 1e-5);
    ASSERT_EQ(other.compressions.size(), 2U);
    for (size_t pass = 0; pass < 2; ++pass) {
      const auto& layers = other.compressions[pass]["layers"];
      const auto& reference = straight.compressions[pass]["layers"];
      ASSERT_EQ(layers.size(), reference.size());
      for (size_t j = 0; j < layers.size(); ++j) {
        EXPECT_EQ(layers[j]["rank"], reference[j]["rank"]);
        EXPECT_NEAR(layers[j]["relative_error"].get<double>(), reference[j]["relative_error"].get<double>(), 1e-4);
      }
    }
    std::printf("[compress] the compressing run at %s: losses and gradient norms within %.2e of one process\n",
                run.c_str(), worst);
  }
}

TEST_F(CompressionResume, MetricsRecordEveryPassAndEvalAndSampleLoadTheCompressedCheckpoint) {
  train_straight_once();
  const Curve straight = curve("straight");
  ASSERT_EQ(straight.compressions.size(), 2U);
  for (size_t pass = 0; pass < 2; ++pass) {
    const auto& record = straight.compressions[pass];
    EXPECT_EQ(record["step"], 3 * (pass + 1));
    EXPECT_EQ(record["mode"], "factorize");
    const auto& layers = record["layers"];
    ASSERT_EQ(layers.size(), 8U);  // gate, fc, proj and kv_up of 2 blocks
    for (const auto& layer : layers) {
      EXPECT_EQ(layer["rank"], 6);
      EXPECT_EQ(layer["rank_before"], pass == 0 ? 0 : 6);
      if (pass == 0) {  // rank 6 of a dense weight of rank 16 or more
        EXPECT_GT(layer["kept_energy"].get<double>(), 0.0);
        EXPECT_LT(layer["kept_energy"].get<double>(), 1.0);
        EXPECT_GT(layer["relative_error"].get<double>(), 0.0);
      } else {  // a rank-6 product re-factorized at rank 6 loses nothing
        EXPECT_NEAR(layer["kept_energy"].get<double>(), 1.0, 1e-12);
        EXPECT_LT(layer["relative_error"].get<double>(), 1e-6);
      }
      EXPECT_GE(layer["seconds"].get<double>(), 0.0);
    }
    const auto before = record["model_parameters_before"].get<int64_t>();
    const auto after = record["model_parameters_after"].get<int64_t>();
    if (pass == 0) {
      EXPECT_LT(after, before);
    } else {
      EXPECT_EQ(after, before);  // re-factorized at the same rank
    }
    EXPECT_GT(record["kv_cache_bytes_per_token"].get<int64_t>(), 0);
  }
  const fs::path checkpoint = *dir_ / "straight" / "checkpoints" / fmt::format("step_{:08d}", kSteps);
  int status = 0;
  const std::string eval = mlagpt(fmt::format("eval --ckpt {} --batches 2", checkpoint.string()), &status);
  ASSERT_EQ(status, 0) << eval;
  std::smatch match;
  ASSERT_TRUE(std::regex_search(eval, match, std::regex(R"(val loss ([0-9.]+))"))) << eval;
  EXPECT_NEAR(std::stod(match[1]), straight.eval.back(), 1e-4) << eval;  // printed with 4 decimals
  const std::string sample =
      mlagpt(fmt::format("sample --ckpt {} --prompt 'Once' --max-new-tokens 12 --temperature 0", checkpoint.string()),
             &status);
  ASSERT_EQ(status, 0) << sample;
  EXPECT_EQ(sample.rfind("Once", 0), 0U) << sample;
}

TEST_F(CompressionResume, TheCompressCommandWritesACheckpointThatEvalLoadsAndTrainingContinues) {
  train("dense", 1, 1, kSteps / 2, /*compress=*/false);
  ASSERT_FALSE(HasFailure());
  int status = 0;
  const std::string out =
      mlagpt(fmt::format("compress --ckpt {} --out {} --targets 'blocks.*.mlp.*' --param-ratio 0.5 "
                         "--batches 2 --device cpu",
                         (*dir_ / "dense" / "checkpoints").string(), (*dir_ / "compressed").string()),
             &status);
  ASSERT_EQ(status, 0) << out;
  std::smatch match;
  ASSERT_TRUE(std::regex_search(out, match, std::regex(R"(val loss ([0-9.]+) -> ([0-9.]+))"))) << out;
  const double after = std::stod(match[2]);
  ASSERT_TRUE(std::regex_search(out, match, std::regex(R"(parameters ([0-9]+) -> ([0-9]+))"))) << out;
  EXPECT_LT(std::stoll(match[2]), std::stoll(match[1])) << out;
  EXPECT_NE(out.find("compressed 6 projection(s)"), std::string::npos) << out;

  const std::string eval = mlagpt(fmt::format("eval --ckpt {} --batches 2", (*dir_ / "compressed").string()), &status);
  ASSERT_EQ(status, 0) << eval;
  ASSERT_TRUE(std::regex_search(eval, match, std::regex(R"(val loss ([0-9.]+))"))) << eval;
  EXPECT_NEAR(std::stod(match[1]), after, 1e-4) << eval;

  // A second compress into the same directory is refused; training continues from the compressed checkpoint.
  const std::string again =
      mlagpt(fmt::format("compress --ckpt {} --out {} --rank 3", (*dir_ / "dense" / "checkpoints").string(),
                         (*dir_ / "compressed").string()),
             &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(again.find("already holds checkpoints"), std::string::npos) << again;
  const std::string resumed = mlagpt::testing::run_command(
      fmt::format("{} train --resume {} --run.out_dir={} --run.device=cpu --run.threads=1 --run.max_steps=6 "
                  "--run.log_every=1 --data.dir={} --data.batch_size=4 --data.seq_len=32 --model.block_size=32 "
                  "--model.n_layer=2 --model.n_embd=32 --model.n_head=4 --model.kv_lora_rank=16 "
                  "--model.qk_nope_head_dim=8 --model.qk_rope_head_dim=4 --model.v_head_dim=8 --optim.lr=3e-3 "
                  "--optim.grad_accum=2 --schedule.warmup_steps=2 --schedule.decay_steps=8 --schedule.min_lr=3e-4 "
                  "--eval.every=0 2>&1",
                  MLAGPT_EXECUTABLE, (*dir_ / "compressed" / fmt::format("step_{:08d}", kSteps / 2)).string(),
                  (*dir_ / "continued").string(), (*dir_ / "data").string()),
      &status);
  ASSERT_EQ(status, 0) << resumed;
  EXPECT_NE(resumed.find("step      6/6"), std::string::npos) << resumed;
  EXPECT_NE(resumed.find("the checkpoint's model is compressed"), std::string::npos) << resumed;
}

TEST_F(CompressionResume, ConvertToMlaWritesACheckpointThatEvalLoadsAndTrainingFineTunes) {
  train("mha", 1, 1, kSteps / 2, /*compress=*/false, "--model.attention=mha");
  ASSERT_FALSE(HasFailure());
  int status = 0;
  const std::string out = mlagpt(fmt::format("convert --to-mla --ckpt {} --out {} --kv-lora-rank 16 --batches 2 "
                                             "--device cpu",
                                             (*dir_ / "mha" / "checkpoints").string(), (*dir_ / "converted").string()),
                                 &status);
  ASSERT_EQ(status, 0) << out;
  std::smatch match;
  ASSERT_TRUE(std::regex_search(out, match, std::regex(R"(val loss ([0-9.]+) -> ([0-9.]+))"))) << out;
  const double after = std::stod(match[2]);
  EXPECT_NE(out.find("kv_lora_rank 16, qk_rope_head_dim 2, qk_nope_head_dim 6, v_head_dim 8"), std::string::npos)
      << out;
  ASSERT_TRUE(std::regex_search(out, match, std::regex(R"(KV cache ([0-9]+) -> ([0-9]+) values per token)"))) << out;
  EXPECT_EQ(std::stoll(match[1]), 2 * 2 * 32);  // 2 layers of K and V, 32 wide
  EXPECT_EQ(std::stoll(match[2]), 2 * (16 + 2));
  const std::string eval = mlagpt(fmt::format("eval --ckpt {} --batches 2", (*dir_ / "converted").string()), &status);
  ASSERT_EQ(status, 0) << eval;
  ASSERT_TRUE(std::regex_search(eval, match, std::regex(R"(val loss ([0-9.]+))"))) << eval;
  EXPECT_NEAR(std::stod(match[1]), after, 1e-4) << eval;
  // The overrides it printed, on the command this test trains with: two steps of fine-tuning.
  ASSERT_TRUE(std::regex_search(out, match, std::regex(R"(--resume (\S+) (--model\.attention=mla.*))"))) << out;
  const std::string resumed = mlagpt::testing::run_command(
      fmt::format("{} train --resume {} --run.out_dir={} --run.device=cpu --run.threads=1 --run.max_steps=2 "
                  "--run.log_every=1 --data.dir={} --data.batch_size=4 --data.seq_len=32 --model.block_size=32 "
                  "--model.n_layer=2 --model.n_embd=32 --model.n_head=4 {} --schedule.warmup_steps=1 "
                  "--eval.every=0 2>&1",
                  MLAGPT_EXECUTABLE, match[1].str(), (*dir_ / "fine_tuned").string(), (*dir_ / "data").string(),
                  match[2].str()),
      &status);
  ASSERT_EQ(status, 0) << resumed;
  EXPECT_NE(resumed.find("step      2/2"), std::string::npos) << resumed;
}
