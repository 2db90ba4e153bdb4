// The Trainer end to end on the CPU: exact resume (2K steps straight equals K steps, then K more after resuming:
// the same losses and bit-identical parameters), refusing a checkpoint of another model, refusing to start fresh
// over an existing run, stopping on repeated non-finite steps, the vocabulary taken from the dataset, and bfloat16
// autocast on the CPU.
#include "trainer/trainer.h"

#include <ATen/ops/equal.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "launch/error.h"
#include "support/small_dataset.h"
#include "support/temp_dir.h"
#include "support/test_runtime.h"

namespace fs = std::filesystem;
using mlagpt::trainer::read_train_config;
using mlagpt::trainer::TrainConfig;
using mlagpt::trainer::Trainer;

using mlagpt::testing::runtime;

namespace {

class TrainerTest : public testing::Test {
 protected:
  void SetUp() override { mlagpt::testing::prepare_small_byte_dataset(dir_.path()); }

  TrainConfig config(const std::string& run, int64_t max_steps, std::vector<std::string> extra = {}) {
    std::vector<std::string> overrides = {"--run.out_dir=" + (dir_ / run).string(),
                                          "--run.device=cpu",
                                          "--run.threads=1",
                                          "--run.max_steps=" + std::to_string(max_steps),
                                          "--run.log_every=100",
                                          "--data.dir=" + (dir_ / "data").string(),
                                          "--data.batch_size=4",
                                          "--data.seq_len=32",
                                          "--model.vocab_size=257",
                                          "--model.block_size=32",
                                          "--model.n_layer=2",
                                          "--model.n_embd=32",
                                          "--model.n_head=4",
                                          "--model.kv_lora_rank=16",
                                          "--model.qk_nope_head_dim=8",
                                          "--model.qk_rope_head_dim=4",
                                          "--model.v_head_dim=8",
                                          "--optim.lr=3e-3",
                                          "--optim.grad_accum=2",
                                          "--schedule.warmup_steps=2",
                                          "--schedule.decay_steps=8",
                                          "--schedule.min_lr=3e-4",
                                          "--eval.every=4",
                                          "--eval.batches=2",
                                          "--checkpoint.every=4"};
    overrides.insert(overrides.end(), extra.begin(), extra.end());
    return read_train_config({}, overrides);
  }

  // Trains 8 steps straight, and 4 then 4 more resumed from the checkpoint of step 4, with `extra` overrides; the
  // losses, the final parameters and the last evaluation must be bit-identical.
  void expect_exact_resume(const std::vector<std::string>& extra) {
    Trainer straight(config("straight", 8, extra), runtime());
    straight.train("");
    Trainer first_half(config("resumed", 4, extra), runtime());
    first_half.train("");
    Trainer second_half(config("resumed", 8, extra), runtime());
    second_half.train("auto");
    EXPECT_EQ(second_half.step(), 8);

    const std::vector<double> expected = losses(dir_ / "straight");
    const std::vector<double> actual = losses(dir_ / "resumed");
    ASSERT_EQ(expected.size(), 8U);
    ASSERT_EQ(actual.size(), 8U);
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ(actual[i], expected[i]) << "step " << i + 1;  // bit-identical, not approximately equal
    }
    EXPECT_LT(expected.back(), expected.front());
    auto resumed = second_half.model().named_parameters();
    for (const auto& item : straight.model().named_parameters()) {
      EXPECT_TRUE(at::equal(item.value(), resumed[item.key()])) << item.key();
    }
    EXPECT_EQ(second_half.last_eval().loss, straight.last_eval().loss);
  }

  static std::vector<double> losses(const fs::path& run) {
    std::vector<double> out;
    std::ifstream in(run / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const auto json = nlohmann::json::parse(line);
      if (json["kind"] == "train") {
        out.push_back(json["loss"].get<double>());
      }
    }
    return out;
  }

  mlagpt::testing::TempDir dir_;
};

}  // namespace

TEST_F(TrainerTest, ResumedRunIsBitIdenticalToAnUninterruptedOne) {
  expect_exact_resume({});
}

// Dropout draws random numbers every step: the resumed run must draw the ones the straight run drew.
TEST_F(TrainerTest, ResumedRunWithDropoutIsBitIdenticalToAnUninterruptedOne) {
  expect_exact_resume({"--model.dropout=0.2"});
}

TEST_F(TrainerTest, RefusesACheckpointOfAnotherModel) {
  Trainer(config("run", 4), runtime()).train("");
  try {
    Trainer(config("run", 8, {"--model.n_layer=3", "--model.kv_lora_rank=8"}), runtime()).train("auto");
    FAIL() << "resumed a checkpoint of another model";
  } catch (const mlagpt::ConfigError& e) {
    const std::string text = e.what();
    EXPECT_NE(text.find("n_layer: 2 != 3"), std::string::npos) << text;
    EXPECT_NE(text.find("kv_lora_rank: 16 != 8"), std::string::npos) << text;
  }
}

TEST_F(TrainerTest, RefusesToStartFreshOverAnExistingRun) {
  Trainer(config("run", 4), runtime()).train("");
  EXPECT_THROW(Trainer(config("run", 8), runtime()).train(""), mlagpt::ConfigError);
  EXPECT_THROW(Trainer(config("other", 4), runtime()).train((dir_ / "nope").string()), mlagpt::IoError);
}

// The tiny configs leave model.vocab_size out: the byte dataset's 257 becomes 320, a multiple of 64, and that is what
// the run stores; a vocabulary set below the dataset's is refused with both numbers.
TEST_F(TrainerTest, TinyConfigsTakeTheVocabularyFromTheDataset) {
  EXPECT_EQ(mlagpt::trainer::padded_vocab_size(50257), 50304);  // GPT-2's, as nanoGPT pads it
  EXPECT_EQ(mlagpt::trainer::padded_vocab_size(4096), 4096);
  EXPECT_EQ(mlagpt::trainer::padded_vocab_size(257), 320);
  EXPECT_EQ(mlagpt::trainer::padded_vocab_size(1), 64);
  for (const std::string name : {"tiny_mha", "tiny_gqa", "tiny_mqa", "tiny_mla"}) {
    SCOPED_TRACE(name);
    const fs::path out = dir_ / ("vocab_" + name);
    const TrainConfig c =
        read_train_config(fs::path(MLAGPT_SOURCE_DIR) / "launch" / "configs" / (name + ".toml"),
                          {"--run.out_dir=" + out.string(), "--run.device=cpu", "--run.threads=1", "--run.max_steps=1",
                           "--data.dir=" + (dir_ / "data").string(), "--data.batch_size=2", "--data.seq_len=16",
                           "--eval.every=0", "--schedule.warmup_steps=1", "--model.n_layer=1"});
    EXPECT_EQ(c.model.vocab_size, 0);
    Trainer trainer(c, runtime());
    trainer.train("");
    EXPECT_EQ(trainer.model().named_parameters()["wte.weight"].size(0), 320);
    std::ifstream stored(out / "config.json");
    EXPECT_EQ(nlohmann::json::parse(stored)["model"]["vocab_size"], 320);
  }
  try {
    Trainer(config("small", 1, {"--model.vocab_size=200"}), runtime());
    FAIL() << "a vocabulary smaller than the dataset's was accepted";
  } catch (const mlagpt::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model.vocab_size (200) is smaller than the vocabulary of the dataset"),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("(257, byte)"), std::string::npos) << e.what();
  }
}

// run.dtype = bfloat16 on a CPU trains under CPU autocast: the losses differ from float32's (so autocast was on),
// still fall, and the weights stay float32.
TEST_F(TrainerTest, BfloatOnTheCpuTrainsUnderAutocast) {
  Trainer bf16(config("bf16", 8, {"--run.dtype=bfloat16", "--eval.every=0", "--checkpoint.every=0"}), runtime());
  bf16.train("");
  Trainer fp32(config("fp32", 8, {"--run.dtype=float32", "--eval.every=0", "--checkpoint.every=0"}), runtime());
  fp32.train("");
  const std::vector<double> reduced = losses(dir_ / "bf16");
  const std::vector<double> full = losses(dir_ / "fp32");
  ASSERT_EQ(reduced.size(), 8U);
  ASSERT_EQ(full.size(), 8U);
  EXPECT_NE(reduced, full);
  for (size_t i = 0; i < reduced.size(); ++i) {
    EXPECT_NEAR(reduced[i], full[i], 0.05 * full[i]) << "step " << i + 1;  // bf16 rounding, not another model
  }
  EXPECT_LT(reduced.back(), reduced.front() - 0.1);
  for (const auto& item : bf16.model().named_parameters()) {
    EXPECT_EQ(item.value().scalar_type(), at::kFloat) << item.key();
  }
}

TEST_F(TrainerTest, StopsAfterTooManyNonFiniteSteps) {
  // A learning rate of 1e30 sends the weights to infinity after the first update.
  Trainer trainer(config("diverge", 20,
                         {"--optim.lr=1e30", "--schedule.min_lr=1e29", "--schedule.warmup_steps=0",
                          "--optim.grad_clip=0", "--run.max_bad_steps=3"}),
                  runtime());
  try {
    trainer.train("");
    FAIL() << "no error";
  } catch (const mlagpt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("3 steps in a row had a non-finite loss"), std::string::npos) << e.what();
  }
  EXPECT_LT(trainer.step(), 20);
}
