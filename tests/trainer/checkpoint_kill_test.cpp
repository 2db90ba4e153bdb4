// Killing `mlagpt train` with SIGKILL at random moments, most of them inside a checkpoint write (one is written
// every step), never leaves a checkpoint that `--resume auto` would pick and then fail to load; and the run, resumed
// after every kill, still finishes. SIGTERM instead stops it after the step in progress with a checkpoint of that
// step and exit status 143, and the run resumes from there.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <random>
#include <thread>

#include "launch/communicator.h"
#include "support/small_dataset.h"
#include "support/temp_dir.h"
#include "trainer/checkpointer.h"

namespace fs = std::filesystem;

namespace {

pid_t spawn(const std::vector<std::string>& arguments, const fs::path& log) {
  std::fflush(nullptr);  // or the child would write this process's buffered output again
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (const auto& argument : arguments) {
      argv.push_back(const_cast<char*>(argument.c_str()));
    }
    argv.push_back(nullptr);
    freopen(log.c_str(), "a", stderr);
    freopen(log.c_str(), "a", stdout);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A byte-level dataset of a small corpus and the command line of a tiny MLA run on it.
class TrainProcess : public ::testing::Test {
 protected:
  void SetUp() override {
    mlagpt::testing::prepare_small_byte_dataset(dir.path(), /*val_fraction=*/0);  // these tests evaluate nothing
  }

  std::vector<std::string> command(int64_t max_steps, int64_t checkpoint_every) const {
    return {MLAGPT_EXECUTABLE,
            "train",
            "--resume",
            "auto",
            "--run.out_dir=" + (dir / "run").string(),
            "--run.device=cpu",
            "--run.threads=1",
            "--run.max_steps=" + std::to_string(max_steps),
            "--data.dir=" + (dir / "data").string(),
            "--data.batch_size=2",
            "--data.seq_len=32",
            "--model.vocab_size=257",
            "--model.block_size=32",
            "--model.n_layer=2",
            "--model.n_embd=64",
            "--model.n_head=4",
            "--model.kv_lora_rank=32",
            "--model.qk_nope_head_dim=16",
            "--model.qk_rope_head_dim=8",
            "--model.v_head_dim=16",
            "--schedule.warmup_steps=5",
            "--schedule.decay_steps=100",
            "--eval.every=0",
            "--checkpoint.every=" + std::to_string(checkpoint_every),
            "--checkpoint.keep=2"};
  }

  std::optional<fs::path> newest_checkpoint() const {
    return mlagpt::trainer::Checkpointer(dir / "run" / "checkpoints", 2, local).find("auto");
  }

  mlagpt::testing::TempDir dir;
  mutable mlagpt::launch::LocalCommunicator local;
};

}  // namespace

TEST_F(TrainProcess, RandomKillsNeverLeaveAnUnloadableLatestCheckpoint) {
  std::mt19937 random(12345);
  std::uniform_int_distribution<int> delay_ms(400, 1600);
  int kills = 0;
  std::string last_step;
  for (int attempt = 0; attempt < 6; ++attempt) {
    const pid_t pid = spawn(command(100000, 1), dir / "train.log");
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(random)));
    if (kill(pid, SIGKILL) == 0) {
      ++kills;
    }
    int status = 0;
    waitpid(pid, &status, 0);
    // Whatever auto picks now must load completely.
    const auto found = newest_checkpoint();
    if (found) {
      std::printf("[kill %d] auto picks %s\n", attempt, found->filename().c_str());
      EXPECT_GE(found->filename().string(), last_step) << "a kill lost progress";
      last_step = found->filename().string();
      SCOPED_TRACE(found->string());
      const auto config = mlagpt::trainer::Checkpointer::stored_config(*found);
      mlagpt::model::Gpt model(config.model);
      EXPECT_NO_THROW(mlagpt::trainer::Checkpointer::load_weights(*found, model));
    }
  }
  EXPECT_EQ(kills, 6);
  ASSERT_FALSE(last_step.empty()) << "no checkpoint survived any of the kills";
  const int64_t reached = std::stoll(last_step.substr(5));
  const pid_t pid = spawn(command(reached + 3, 1), dir / "train.log");
  int status = 0;
  waitpid(pid, &status, 0);
  const std::string text = read_text(dir / "train.log");
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << text;
  const auto last = newest_checkpoint();
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->filename(), fmt::format("step_{:08d}", reached + 3));
}

TEST_F(TrainProcess, SigtermSavesTheStepInProgressAndExits) {
  // No periodic checkpoints: the one found afterwards is the signal's.
  const pid_t pid = spawn(command(100000, 0), dir / "train.log");
  const fs::path metrics = dir / "run" / "metrics.jsonl";
  const auto steps_logged = [&] {
    const std::string text = read_text(metrics);
    return std::count(text.begin(), text.end(), '\n');
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (steps_logged() < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  waitpid(pid, &status, 0);
  const std::string log = read_text(dir / "train.log");
  ASSERT_TRUE(WIFEXITED(status)) << "SIGTERM ended the process instead of stopping the run:\n" << log;
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM) << log;
  EXPECT_NE(log.find("SIGTERM: stopped at step"), std::string::npos) << log;

  const auto stopped = newest_checkpoint();
  ASSERT_TRUE(stopped.has_value()) << log;
  const int64_t step = std::stoll(stopped->filename().string().substr(5));
  EXPECT_EQ(step, steps_logged()) << "the checkpoint is not of the last step trained";
  EXPECT_GE(step, 3);
  EXPECT_LT(step, 100000);

  const pid_t resumed = spawn(command(step + 2, 0), dir / "resume.log");
  waitpid(resumed, &status, 0);
  const std::string resume_log = read_text(dir / "resume.log");
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << resume_log;
  EXPECT_NE(resume_log.find(stopped->filename().string()), std::string::npos) << resume_log;
  const auto last = newest_checkpoint();
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->filename(), fmt::format("step_{:08d}", step + 2));
}
