// SIGKILL inside a checkpoint write: `mlagpt train` (a checkpoint every step) is killed while a step's rank file is
// being written, once a random fraction of it is on disk; afterwards the step directory must still lack its
// metadata.json (the kill landed inside the write, counted for every kill), `--resume auto` must pick the
// checkpoint before it and load it, and the run resumed after six such kills must end with exactly the weights of
// an uninterrupted run. SIGTERM instead stops it after the step in progress with a checkpoint of that step and exit
// status 143, and the run resumes from there.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/ops/equal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <random>
#include <thread>

#include "launch/communicator.h"
#include "model/gpt.h"
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

  // `wide`: a model of 2.7M parameters, whose checkpoint (32 MB with the optimizer's moments) takes long enough to
  // write that a kill sent when the write is seen to start lands inside it.
  std::vector<std::string> command(int64_t max_steps, int64_t checkpoint_every, const std::string& run = "run",
                                   bool wide = false) const {
    std::vector<std::string> arguments = {MLAGPT_EXECUTABLE,
                                          "train",
                                          "--resume",
                                          "auto",
                                          "--run.out_dir=" + (dir / run).string(),
                                          "--run.device=cpu",
                                          "--run.threads=1",
                                          "--run.max_steps=" + std::to_string(max_steps),
                                          "--data.dir=" + (dir / "data").string(),
                                          "--data.batch_size=2",
                                          "--data.seq_len=32",
                                          "--model.vocab_size=257",
                                          "--model.block_size=32",
                                          "--schedule.warmup_steps=5",
                                          "--schedule.decay_steps=100",
                                          "--eval.every=0",
                                          "--checkpoint.every=" + std::to_string(checkpoint_every),
                                          "--checkpoint.keep=2"};
    const std::vector<std::string> model =
        wide ? std::vector<std::string>{"--model.n_layer=4",
                                        "--model.n_embd=256",
                                        "--model.n_head=4",
                                        "--model.kv_lora_rank=64",
                                        "--model.qk_nope_head_dim=32",
                                        "--model.qk_rope_head_dim=16",
                                        "--model.v_head_dim=48"}
             : std::vector<std::string>{
                   "--model.n_layer=2",       "--model.n_embd=64",           "--model.n_head=4",
                   "--model.kv_lora_rank=32", "--model.qk_nope_head_dim=16", "--model.qk_rope_head_dim=8",
                   "--model.v_head_dim=16"};
    arguments.insert(arguments.end(), model.begin(), model.end());
    return arguments;
  }

  std::optional<fs::path> newest_checkpoint(const std::string& run = "run") const {
    return mlagpt::trainer::Checkpointer(dir / run / "checkpoints", 2, local).find("auto");
  }

  mlagpt::testing::TempDir dir;
  mutable mlagpt::launch::LocalCommunicator local;
};

}  // namespace

std::string step_name(int64_t step) {
  return fmt::format("step_{:08d}", step);
}

TEST_F(TrainProcess, KillsInsideCheckpointWritesResumeFromThePreviousCheckpoint) {
  std::mt19937 random(12345);
  std::uniform_int_distribution<int64_t> write_to_kill(2, 3);  // the 2nd or 3rd checkpoint this process writes
  std::uniform_real_distribution<double> written_fraction(0.05, 0.95);
  const fs::path checkpoints = dir / "run" / "checkpoints";
  int kills_inside_a_write = 0;
  int64_t reached = 0;  // the newest complete checkpoint's step
  for (int attempt = 0; attempt < 6; ++attempt) {
    const int64_t target = reached + write_to_kill(random);
    const double fraction = written_fraction(random);
    const fs::path previous = checkpoints / step_name(target - 1);
    const fs::path staging = checkpoints / step_name(target);
    const pid_t pid = spawn(command(100000, 1, "run", /*wide=*/true), dir / "train.log");
    // Poll tightly. The process writes the checkpoint before the target whole, which gives the size of a rank
    // file; then the target's rank file grows under its temporary name as the tensors are written, and the kill
    // goes out once `fraction` of that size is there: at a different point of the write each time.
    uintmax_t full_size = 0;
    bool sent = false;
    int status = 0;
    bool exited = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (!sent && !exited && std::chrono::steady_clock::now() < deadline) {
      std::error_code ignored;
      if (full_size == 0) {
        if (mlagpt::trainer::Checkpointer::is_complete(previous)) {
          const uintmax_t size = fs::file_size(previous / "rank_00000.h5", ignored);
          full_size = ignored ? 0 : size;
        }
      } else if (const uintmax_t size = fs::file_size(staging / "rank_00000.h5.tmp", ignored);
                 !ignored && static_cast<double>(size) >= fraction * static_cast<double>(full_size)) {
        sent = kill(pid, SIGKILL) == 0;
        continue;
      }
      exited = waitpid(pid, &status, WNOHANG) == pid;
    }
    if (!exited) {
      kill(pid, SIGKILL);  // a no-op when it already was
      waitpid(pid, &status, 0);
    }
    ASSERT_TRUE(sent) << "attempt " << attempt << ": " << staging << " never appeared:\n"
                      << read_text(dir / "train.log");
    const bool inside_the_write = fs::is_directory(staging) && !mlagpt::trainer::Checkpointer::is_complete(staging);
    EXPECT_TRUE(inside_the_write) << "attempt " << attempt << ": the kill landed after " << staging << " was complete";
    kills_inside_a_write += inside_the_write ? 1 : 0;
    std::printf("[kill %d] at %.0f%% of the rank file of %s: inside the write: %s\n", attempt, fraction * 100,
                staging.filename().c_str(), inside_the_write ? "yes" : "no");

    // `--resume auto` picks the checkpoint before the one being written, and it loads completely.
    const auto found = newest_checkpoint();
    ASSERT_TRUE(found.has_value()) << "no checkpoint survived attempt " << attempt;
    EXPECT_EQ(found->filename(), step_name(inside_the_write ? target - 1 : target));
    reached = std::stoll(found->filename().string().substr(5));
    SCOPED_TRACE(found->string());
    const auto config = mlagpt::trainer::Checkpointer::stored_config(*found);
    mlagpt::model::Gpt model(config.model);
    EXPECT_NO_THROW(mlagpt::trainer::Checkpointer::load_weights(*found, model));
  }
  EXPECT_EQ(kills_inside_a_write, 6);

  // Resumed once more to the end, the run has exactly the weights of one that was never interrupted.
  const int64_t last = reached + 2;
  const std::vector<std::pair<std::string, int64_t>> runs = {{"run", 1}, {"straight", 0}};
  for (const auto& [run, every] : runs) {
    const pid_t pid = spawn(command(last, every, run, /*wide=*/true), dir / (run + ".log"));
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << read_text(dir / (run + ".log"));
  }
  const auto resumed = newest_checkpoint("run");
  const auto straight = newest_checkpoint("straight");
  ASSERT_TRUE(resumed.has_value() && straight.has_value());
  ASSERT_EQ(resumed->filename(), step_name(last));
  ASSERT_EQ(straight->filename(), step_name(last));
  const auto config = mlagpt::trainer::Checkpointer::stored_config(*straight);
  mlagpt::model::Gpt a(config.model);
  mlagpt::model::Gpt b(config.model);
  mlagpt::trainer::Checkpointer::load_weights(*resumed, a);
  mlagpt::trainer::Checkpointer::load_weights(*straight, b);
  auto expected = b.named_parameters();
  for (const auto& item : a.named_parameters()) {
    EXPECT_TRUE(at::equal(item.value(), expected[item.key()])) << item.key();
  }
}

TEST_F(TrainProcess, SigtermSavesTheStepInProgressAndExits) {
  // No periodic checkpoints: the one found afterwards is the signal's.
  const pid_t pid = spawn(command(100000, 0), dir / "train.log");
  const fs::path metrics = dir / "run" / "metrics.jsonl";
  const auto steps_logged = [&] {  // the training steps' records (checkpoints have their own)
    const std::string text = read_text(metrics);
    int64_t count = 0;
    for (size_t at = text.find("\"kind\":\"train\""); at != std::string::npos;
         at = text.find("\"kind\":\"train\"", at + 1)) {
      ++count;
    }
    return count;
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
