// `mlagpt eval` and `mlagpt sample` on the checkpoints of one tiny MLA run, trained once for the suite with the
// mlagpt executable. eval of a checkpoint, over the run's number of evaluation batches, reproduces the val_loss the
// run logged at that step (the same weights on the same windows), and its perplexity is exp(loss). sample is
// deterministic: at temperature 0 the absorbed and naive MLA decoders give the same text, a seed repeats its text
// (and another seed gives another), and top-k 1 is greedy whatever the temperature. A prompt that fills the context
// is refused with a message naming its length and block_size, before anything is printed.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>

#include "support/small_dataset.h"
#include "support/temp_dir.h"

namespace fs = std::filesystem;

namespace {

using Command = mlagpt::testing::CommandOutput;

struct EvalLine {
  double loss = 0;
  double perplexity = 0;
  int64_t tokens = 0;
};

class EvalSample : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<mlagpt::testing::TempDir>();
    mlagpt::testing::prepare_small_byte_dataset(dir_->path());
    // No two sizes equal (T 32 < block_size 40; C 48, Dc 24, Dq 20, Dn 14, Dh 12, Dv 10, Dr 4): a mixed-up shape fails.
    training_ = mlagpt(fmt::format(
        "train --run.out_dir={} --run.device=cpu --run.threads=1 --run.max_steps={} --run.log_every=100 "
        "--data.dir={} --data.batch_size={} --data.seq_len={} --model.attention=mla --model.vocab_size=257 "
        "--model.block_size={} --model.n_layer=2 --model.n_embd=48 --model.n_head=4 --model.kv_lora_rank=24 "
        "--model.q_lora_rank=20 --model.qk_nope_head_dim=14 --model.qk_rope_head_dim=4 --model.v_head_dim=10 "
        "--optim.lr=1e-2 --schedule.warmup_steps=3 --schedule.min_lr=1e-3 --eval.every={} --eval.batches={} "
        "--checkpoint.every={} --checkpoint.keep=2",
        (*dir_ / "run").string(), kSteps, (*dir_ / "data").string(), kBatch, kSeqLen, kBlockSize, kEvalEvery,
        kEvalBatches, kEvalEvery));
    if (training_.status != 0) {
      return;
    }
    std::ifstream in(*dir_ / "run" / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const auto json = nlohmann::json::parse(line);
      if (json["kind"] == "eval") {
        logged_[json["step"].get<int64_t>()] = {json["val_loss"].get<double>(), json["val_perplexity"].get<double>()};
      }
    }
  }
  static void TearDownTestSuite() {
    dir_.reset();
    logged_.clear();
    evals_.clear();
    greedy_.reset();
  }

  void SetUp() override {
    ASSERT_EQ(training_.status, 0) << "the training run failed:\n" << training_.err;
    ASSERT_EQ(logged_.size(), 2U) << "expected evaluations at steps " << kEvalEvery << " and " << kSteps;
  }

  // Runs `mlagpt ARGS`, its standard error to a file.
  static Command mlagpt(const std::string& args) {
    return mlagpt::testing::run_capturing(fmt::format("{} {}", MLAGPT_EXECUTABLE, args), *dir_ / "stderr.txt");
  }

  static fs::path checkpoint(int64_t step) { return *dir_ / "run" / "checkpoints" / fmt::format("step_{:08d}", step); }

  // `mlagpt eval --ckpt CHECKPOINT EXTRA`, parsed; fails the test when it fails or prints something else. Each
  // distinct command runs once for the suite (a process start costs more than a tiny evaluation).
  static EvalLine eval(const fs::path& checkpoint, const std::string& extra) {
    const std::string args = fmt::format("eval --ckpt {} {}", checkpoint.string(), extra);
    if (const auto found = evals_.find(args); found != evals_.end()) {
      return found->second;
    }
    const Command run = mlagpt(args);
    EXPECT_EQ(run.status, 0) << run.err;
    static const std::regex kLine(R"(val loss ([0-9.]+) \| val perplexity ([0-9.]+) \| ([0-9]+) tokens)");
    std::smatch match;
    EvalLine line;
    if (!std::regex_search(run.out, match, kLine)) {
      ADD_FAILURE() << "no evaluation in the output of eval:\n" << run.out << run.err;
      return line;
    }
    line.loss = std::stod(match[1]);
    line.perplexity = std::stod(match[2]);
    line.tokens = std::stoll(match[3]);
    evals_[args] = line;
    return line;
  }

  // The text `mlagpt sample` prints for the trained run's last checkpoint; fails the test when sample fails.
  static std::string sample(const std::string& prompt, const std::string& options) {
    const Command run = mlagpt(fmt::format("sample --ckpt {} --prompt '{}' --max-new-tokens {} {}",
                                           (*dir_ / "run" / "checkpoints").string(), prompt, kNewTokens, options));
    EXPECT_EQ(run.status, 0) << run.err;
    EXPECT_EQ(run.out.rfind(prompt, 0), 0U) << "the sample does not start with its prompt: " << run.out;
    return run.out;
  }

  // The greedy (temperature 0) absorbed-mode sample of kPrompt, sampled once for the suite.
  static const std::string& greedy() {
    if (!greedy_) {
      greedy_ = sample(kPrompt, "--temperature 0 --mla-mode absorbed");
    }
    return *greedy_;
  }

  static constexpr int64_t kSteps = 30;
  static constexpr int64_t kEvalEvery = 15;
  static constexpr int64_t kEvalBatches = 3;
  static constexpr int64_t kBatch = 6;
  static constexpr int64_t kSeqLen = 32;
  static constexpr int64_t kBlockSize = 40;
  static constexpr int64_t kNewTokens = 30;
  // eval prints the loss with 4 decimals: it may differ from the logged one by half a unit of the last digit.
  static constexpr double kPrintedLoss = 0.5e-4;
  static constexpr const char* kPrompt = "the 3 quick ";

  struct Logged {
    double loss;
    double perplexity;
  };
  static inline std::unique_ptr<mlagpt::testing::TempDir> dir_;
  static inline Command training_;
  static inline std::map<int64_t, Logged> logged_;       // the run's evaluations by step
  static inline std::map<std::string, EvalLine> evals_;  // eval's results by command
  static inline std::optional<std::string> greedy_;
};

}  // namespace

TEST_F(EvalSample, EvalOfACheckpointEqualsTheValLossTheRunLogged) {
  for (const auto& [step, logged] : logged_) {
    const EvalLine line = eval(checkpoint(step), fmt::format("--batches {}", kEvalBatches));
    EXPECT_NEAR(line.loss, logged.loss, kPrintedLoss * 1.01) << "checkpoint of step " << step;
    EXPECT_EQ(line.tokens, kEvalBatches * kBatch * kSeqLen) << "checkpoint of step " << step;
  }
  // The two evaluations are far enough apart that comparing against the wrong one would fail.
  ASSERT_GT(std::abs(logged_.at(kEvalEvery).loss - logged_.at(kSteps).loss), 100 * kPrintedLoss);
  // A checkpoint directory stands for its newest step.
  const EvalLine newest = eval(*dir_ / "run" / "checkpoints", fmt::format("--batches {}", kEvalBatches));
  EXPECT_NEAR(newest.loss, logged_.at(kSteps).loss, kPrintedLoss * 1.01);
}

TEST_F(EvalSample, EvalWithoutBatchesCoversTheWholeValidationSplit) {
  const EvalLine some = eval(checkpoint(kSteps), fmt::format("--batches {}", kEvalBatches));
  const EvalLine all = eval(checkpoint(kSteps), "");
  EXPECT_GT(all.tokens, some.tokens);
}

TEST_F(EvalSample, EvalRefusesANegativeNumberOfBatches) {
  const Command run = mlagpt(fmt::format("eval --ckpt {} --batches=-2", checkpoint(kSteps).string()));
  EXPECT_NE(run.status, 0) << run.out;
  EXPECT_NE(run.err.find("--batches must be >= 0"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("-2"), std::string::npos) << run.err;
  EXPECT_EQ(run.out, "");
}

TEST_F(EvalSample, PerplexityIsExpOfTheLoss) {
  for (const auto& [step, logged] : logged_) {
    EXPECT_NEAR(logged.perplexity, std::exp(logged.loss), 1e-12 * logged.perplexity) << "logged at step " << step;
  }
  const EvalLine line = eval(checkpoint(kSteps), fmt::format("--batches {}", kEvalBatches));
  // Printed with 4 and 2 decimals: exp of the printed loss is within exp(loss) * 0.5e-4 of the exact perplexity.
  EXPECT_NEAR(line.perplexity, std::exp(line.loss), std::exp(line.loss) * kPrintedLoss * 1.01 + 0.005);
}

TEST_F(EvalSample, GreedySamplesAreTheSameInAbsorbedAndNaiveMode) {
  const std::string& absorbed = greedy();
  const std::string naive = sample(kPrompt, "--temperature 0 --mla-mode naive");
  EXPECT_EQ(absorbed, naive);
  EXPECT_GT(absorbed.size(), std::string(kPrompt).size() + 1) << "nothing was generated: " << absorbed;
}

TEST_F(EvalSample, TheSameSeedRepeatsItsSample) {
  const std::string first = sample(kPrompt, "--temperature 1 --top-k 0 --seed 5");
  const std::string again = sample(kPrompt, "--temperature 1 --top-k 0 --seed 5");
  const std::string other = sample(kPrompt, "--temperature 1 --top-k 0 --seed 6");
  EXPECT_EQ(first, again);
  EXPECT_NE(first, other) << "the seed is not used";
  // The naive decoder draws the same tokens from the same seed.
  EXPECT_EQ(sample(kPrompt, "--temperature 1 --top-k 0 --seed 5 --mla-mode naive"), first);
}

TEST_F(EvalSample, TopKOneIsGreedy) {
  EXPECT_EQ(sample(kPrompt, "--temperature 1.5 --top-k 1 --seed 11"), greedy());
  // Sampling at that temperature without top-k gives another text: top-k 1 is what makes it greedy.
  EXPECT_NE(sample(kPrompt, "--temperature 1.5 --top-k 0 --seed 11"), greedy());
}

TEST_F(EvalSample, APromptThatFillsTheContextIsAClearError) {
  // The byte tokenizer makes one token of each ASCII character.
  for (const int64_t length : {kBlockSize, kBlockSize + 7}) {
    const std::string prompt(static_cast<size_t>(length), 'a');
    const Command run = mlagpt(fmt::format("sample --ckpt {} --prompt {} --max-new-tokens 5",
                                           (*dir_ / "run" / "checkpoints").string(), prompt));
    EXPECT_NE(run.status, 0) << "a prompt of " << length << " tokens";
    EXPECT_NE(run.err.find(fmt::format("{} tokens", length)), std::string::npos) << run.err;
    EXPECT_NE(run.err.find(fmt::format("block_size ({})", kBlockSize)), std::string::npos) << run.err;
    EXPECT_EQ(run.out, "") << "printed before failing";
  }
  // One token shorter leaves room: the prompt's last position predicts a token, and that token, fed back into the
  // last place of the context, predicts one more; then generation stops (the printed text ends in a newline).
  const std::string longest(static_cast<size_t>(kBlockSize - 1), 'a');
  const std::string text = sample(longest, "--temperature 0");
  EXPECT_LE(text.size(), longest.size() + 2 + 1) << text;
}
