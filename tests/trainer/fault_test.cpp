// Faults in a 2-rank `mlagpt train` under mpiexec, each bounded in time and timed (the seconds are printed):
//   - a rank stopped (SIGSTOP) in mid-training: the watchdog of the other ends the job with exit status 124 within
//     parallel.timeout_s + 10 s, naming the collective it waited for;
//   - a rank killed (SIGKILL): every rank is gone within 10 s;
//   - a rank that throws (a corrupt copy of the training shard only it reads): the job ends within seconds, long
//     before the watchdog's timeout, with the error naming the file;
//   - a rank whose metrics port is taken: an error naming the address on that rank, and the job ends at once;
//   - a checkpoint write that fails on one rank (its file-size limit, RLIMIT_FSIZE, lowered in mid-run below its
//     shard's size, as a full disk would): the run stops with an error naming the file on every rank, the previous
//     checkpoint stays complete, `latest` and loadable, nothing of the failed one is left, and the run resumes from
//     the previous one;
//   - SIGUSR1 pre-emption (to mpiexec, which passes it on) and SIGTERM to every rank (as srun sends it) with a 2 s
//     watchdog timeout: the final checkpoint is written and the job exits 128 + the signal with no timeout.
// Each rank is started through `bash -c 'echo $$ > pidfile; exec mlagpt ...'` (an mpiexec MPMD line), so that the
// test knows its pid, and rank 1 can be given its own data.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <thread>

#include "launch/stop_signals.h"
#include "model/gpt.h"
#include "support/small_dataset.h"
#include "support/temp_dir.h"
#include "trainer/checkpointer.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// An mpiexec job in its own process group, its output in a log file.
struct Job {
  pid_t pid = -1;
  fs::path log;
  fs::path pid_files[2];
  Clock::time_point started;

  // Waits up to `seconds` for the job to end: its wait status, or nullopt (then the whole group is killed).
  std::optional<int> wait(double seconds) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    while (Clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        return status;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill_all();
    return std::nullopt;
  }
  void kill_all() {
    if (pid > 0) {
      killpg(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      pid = -1;
    }
  }
  // Waits until the log holds `text`; false after `seconds`.
  bool wait_for_log(const std::string& text, double seconds) const {
    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    while (Clock::now() < deadline) {
      if (contains(read_text(log), text)) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  pid_t rank(int r) const { return static_cast<pid_t>(std::stol(read_text(pid_files[r]))); }
  pid_t rank1() const { return rank(1); }
  ~Job() { kill_all(); }
};

// Whether any process still runs (not a zombie) whose command line holds `marker`.
bool any_process_with(const std::string& marker) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos || std::stol(name) == getpid()) {
      continue;
    }
    std::string cmdline = read_text(entry.path() / "cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    const std::string stat = read_text(entry.path() / "stat");
    const size_t paren = stat.rfind(')');
    const bool zombie = paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z';
    if (!zombie && contains(cmdline, marker) && !contains(cmdline, "fault_test")) {
      return true;
    }
  }
  return false;
}

// Overwrites every token of the shard's /tokens with 0xFFFF (outside the byte tokenizer's vocabulary of 257).
void corrupt_tokens(const fs::path& shard) {
  const hid_t file = H5Fopen(shard.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(file, 0) << shard;
  const hid_t tokens = H5Dopen2(file, "/tokens", H5P_DEFAULT);
  ASSERT_GE(tokens, 0) << shard;
  const haddr_t offset = H5Dget_offset(tokens);
  const hsize_t bytes = H5Dget_storage_size(tokens);
  H5Dclose(tokens);
  H5Fclose(file);
  ASSERT_NE(offset, HADDR_UNDEF) << "the token dataset must be contiguous";
  std::fstream out(shard, std::ios::in | std::ios::out | std::ios::binary);
  out.seekp(static_cast<std::streamoff>(offset));
  const std::string garbage(bytes, '\xff');
  out.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  ASSERT_TRUE(out.good()) << shard;
}

class Faults : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<mlagpt::testing::TempDir>();
    mlagpt::testing::prepare_small_byte_dataset(dir_->path());
  }
  static void TearDownTestSuite() { dir_.reset(); }

  // The mlagpt arguments of a tiny run `run` (endless unless max_steps is given).
  static std::string arguments(const std::string& run, const std::string& extra, const fs::path& data) {
    return fmt::format(
        "train --resume auto --run.out_dir={} --run.device=cpu --run.threads=1 --run.log_every=1 --data.dir={} "
        "--data.batch_size=2 --data.seq_len=32 --model.vocab_size=257 --model.block_size=32 --model.n_layer=2 "
        "--model.n_embd=32 --model.n_head=4 --model.kv_lora_rank=16 --model.qk_nope_head_dim=8 "
        "--model.qk_rope_head_dim=4 --model.v_head_dim=8 --optim.lr=1e-3 --schedule.warmup_steps=2 "
        "--schedule.decay_steps=1000 --eval.every=0 {}",
        (*dir_ / run).string(), data.string(), extra);
  }

  // Starts 2 ranks of run `run`, with `rank1_extra` arguments for rank 1 only.
  static Job start(const std::string& run, const std::string& extra, const std::string& rank1_extra = "") {
    Job job;
    job.log = *dir_ / (run + ".log");
    for (int r = 0; r < 2; ++r) {
      job.pid_files[r] = *dir_ / fmt::format("{}.rank{}.pid", run, r);
      fs::remove(job.pid_files[r]);
    }
    const fs::path data = *dir_ / "data";
    const std::string command = fmt::format(
        "exec {mpiexec} -n 1 bash -c 'echo $$ > {pidfile0}; exec \"$0\" \"$@\"' {mlagpt} {rank0} : -n 1 bash -c "
        "'echo $$ > {pidfile}; exec \"$0\" \"$@\"' "
        "{mlagpt} {rank1} > {log} 2>&1",
        fmt::arg("mpiexec", MLAGPT_MPIEXEC), fmt::arg("mlagpt", MLAGPT_EXECUTABLE),
        fmt::arg("rank0", arguments(run, extra, data)), fmt::arg("pidfile0", job.pid_files[0].string()),
        fmt::arg("pidfile", job.pid_files[1].string()),
        fmt::arg("rank1", arguments(run, extra + " " + rank1_extra, data)), fmt::arg("log", job.log.string()));
    std::fflush(nullptr);
    job.started = Clock::now();
    job.pid = fork();
    if (job.pid == 0) {
      setpgid(0, 0);
      execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    setpgid(job.pid, job.pid);
    return job;
  }

  static void report(const std::string& what, double seconds) {
    std::cout << fmt::format("[ measured ] {}: {:.2f} s\n", what, seconds) << std::flush;
    testing::Test::RecordProperty(what, fmt::format("{:.2f}", seconds));
  }

  // Run `run` under a 2 s watchdog timeout until step 10, stops it with `signal` sent by `send(job)`, and checks
  // that every rank stopped at one step with a checkpoint and the job exited 128 + signal, with no timeout.
  static void expect_preempted(const std::string& run, int signal, const std::function<void(const Job&)>& send,
                               const std::string& what) {
    Job job = start(run, "--parallel.timeout_s=2 --parallel.startup_timeout_s=120");
    ASSERT_TRUE(job.wait_for_log("step     10/", 120)) << read_text(job.log);
    send(job);
    const auto signalled = Clock::now();
    const std::optional<int> status = job.wait(60);
    const std::string log = read_text(job.log);
    ASSERT_TRUE(status.has_value()) << log;
    report(what, seconds_since(signalled));
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 128 + signal) << log;
    for (int r = 0; r < 2; ++r) {
      EXPECT_TRUE(
          contains(log, fmt::format("[rank {}] [warning] {}: stopped at step", r, mlagpt::launch::signal_name(signal))))
          << log;
    }
    EXPECT_FALSE(contains(log, "[watchdog]")) << log;
    const fs::path checkpoints = *dir_ / run / "checkpoints";
    const std::string latest = read_text(checkpoints / "latest");
    ASSERT_FALSE(latest.empty()) << log;
    EXPECT_TRUE(fs::exists(checkpoints / latest.substr(0, latest.size() - 1) / "metadata.json"));
  }

  static inline std::unique_ptr<mlagpt::testing::TempDir> dir_;
};

TEST_F(Faults, AStoppedRankEndsTheJobWithinTheTimeoutNamingTheCollective) {
  constexpr double kTimeout = 3;
  Job job = start("stopped", fmt::format("--parallel.timeout_s={} --parallel.startup_timeout_s=120", kTimeout));
  ASSERT_TRUE(job.wait_for_log("step      5/", 120)) << read_text(job.log);
  ASSERT_EQ(kill(job.rank1(), SIGSTOP), 0);
  const auto stopped = Clock::now();
  const std::optional<int> status = job.wait(kTimeout + 10);
  const double seconds = seconds_since(stopped);
  const std::string log = read_text(job.log);
  ASSERT_TRUE(status.has_value()) << "still running " << kTimeout + 10 << " s after SIGSTOP:\n" << log;
  report("SIGSTOP of rank 1 to the end of the job", seconds);
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 124) << log;
  EXPECT_TRUE(contains(log, "[rank 0] [critical] [watchdog] rank 0 on host")) << log;
  EXPECT_TRUE(contains(log, "collective timeout: all_reduce")) << log;
  EXPECT_TRUE(contains(log, "on the dp group (2 ranks)")) << log;
  EXPECT_TRUE(contains(log, "collective(s), oldest first")) << log;
  EXPECT_GE(seconds, kTimeout) << "ended before the timeout: by what?\n" << log;
  EXPECT_FALSE(any_process_with((*dir_ / "stopped").string())) << "a rank outlived the job";
}

TEST_F(Faults, AKilledRankTakesEveryRankWithItWithinTenSeconds) {
  Job job = start("killed", "--parallel.timeout_s=300");
  ASSERT_TRUE(job.wait_for_log("step      5/", 120)) << read_text(job.log);
  ASSERT_EQ(kill(job.rank1(), SIGKILL), 0);
  const auto killed = Clock::now();
  const std::optional<int> status = job.wait(10);
  const double seconds = seconds_since(killed);
  const std::string log = read_text(job.log);
  ASSERT_TRUE(status.has_value()) << "still running 10 s after SIGKILL:\n" << log;
  report("SIGKILL of rank 1 to the end of the job", seconds);
  EXPECT_FALSE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << log;
  EXPECT_FALSE(contains(log, "[watchdog]")) << "the launcher, not a timeout, ends this job:\n" << log;
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(any_process_with((*dir_ / "killed").string())) << "a rank outlived the job";
}

TEST_F(Faults, ARankThatThrowsEndsTheJobInSecondsNotAtTheTimeout) {
  // Rank 1 reads a copy of the dataset whose training shard holds tokens outside the vocabulary.
  const fs::path corrupt = *dir_ / "corrupt_data";
  fs::remove_all(corrupt);
  fs::copy(*dir_ / "data", corrupt, fs::copy_options::recursive);
  fs::path shard;
  for (const auto& entry : fs::directory_iterator(corrupt)) {
    if (contains(entry.path().filename().string(), "train") && entry.path().extension() == ".h5") {
      shard = entry.path();
    }
  }
  ASSERT_FALSE(shard.empty()) << "no training shard in " << corrupt;
  corrupt_tokens(shard);
  constexpr double kTimeout = 300;
  Job job = start("throws", fmt::format("--parallel.timeout_s={} --parallel.startup_timeout_s={}", kTimeout, kTimeout),
                  "--data.dir=" + corrupt.string());
  const std::optional<int> status = job.wait(60);
  const double seconds = seconds_since(job.started);
  const std::string log = read_text(job.log);
  ASSERT_TRUE(status.has_value()) << "still running after 60 s:\n" << log;
  report("start of the job to its end after rank 1 threw", seconds);
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << log;
  EXPECT_TRUE(contains(log, "[rank 1] [error] " + shard.string())) << log;
  EXPECT_TRUE(contains(log, "is >= vocab_size 257")) << log;
  EXPECT_FALSE(contains(log, "[watchdog]")) << log;
  EXPECT_LT(seconds, 60);
}

TEST_F(Faults, ARankWhoseMetricsPortIsTakenEndsTheJobAtStartUp) {
  // Something else holds the port that rank 1 (local rank 1) would serve on: port + 1.
  const int holder = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(holder, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  socklen_t length = sizeof(address);
  ASSERT_EQ(bind(holder, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(holder, 1), 0);
  ASSERT_EQ(getsockname(holder, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const int taken = ntohs(address.sin_port);
  Job job =
      start("port_taken", fmt::format("--parallel.timeout_s=300 --monitoring.metrics_address=127.0.0.1:{}", taken - 1));
  const std::optional<int> status = job.wait(60);
  const double seconds = seconds_since(job.started);
  close(holder);
  const std::string log = read_text(job.log);
  ASSERT_TRUE(status.has_value()) << "still running after 60 s:\n" << log;
  report("start of the job to its end after rank 1 found its metrics port taken", seconds);
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << log;
  EXPECT_TRUE(contains(log, fmt::format("[rank 1] [error] metrics: cannot listen on '127.0.0.1:{}'", taken))) << log;
  EXPECT_FALSE(contains(log, "[watchdog]")) << log;
}

TEST_F(Faults, AFailedCheckpointWriteKeepsThePreviousCheckpointAndStopsTheRun) {
  const std::string every = "--checkpoint.every=4 --checkpoint.keep=3";
  const fs::path checkpoints = *dir_ / "disk" / "checkpoints";
  Job job = start("disk", every);
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (read_text(checkpoints / "latest").empty() && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_FALSE(read_text(checkpoints / "latest").empty()) << read_text(job.log);
  // From now on rank 1 may write files of 64 KiB, less than its shard of a checkpoint (its MPI start-up, whose shared
  // memory files are larger, is over).
  const rlimit limit{.rlim_cur = 64 << 10, .rlim_max = 64 << 10};
  ASSERT_EQ(prlimit(job.rank1(), RLIMIT_FSIZE, &limit, nullptr), 0);
  const std::optional<int> status = job.wait(120);
  const std::string log = read_text(job.log);
  ASSERT_TRUE(status.has_value()) << log;
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0) << log;
  const size_t saving = log.find("[rank 0] [error] [ckpt] saving step ");
  ASSERT_NE(saving, std::string::npos) << "every rank reports the failed save:\n" << log;
  const int64_t failed = std::stoll(log.substr(saving + std::string("[rank 0] [error] [ckpt] saving step ").size()));
  const std::string failed_dir = fmt::format("step_{:08d}", failed);
  EXPECT_TRUE(contains(log, fmt::format("{}/rank_00001.h5: cannot write it", failed_dir))) << log;
  EXPECT_TRUE(contains(log, "File too large")) << log;
  EXPECT_TRUE(contains(log, "[rank 1] [error]")) << log;

  // The newest complete checkpoint is the one before, whole and loadable; nothing of the failed one is left.
  const std::string previous_dir = fmt::format("step_{:08d}", failed - 4);
  EXPECT_EQ(read_text(checkpoints / "latest"), previous_dir + "\n");
  for (const auto& entry : fs::recursive_directory_iterator(checkpoints)) {
    EXPECT_FALSE(contains(entry.path().string(), failed_dir)) << "left behind: " << entry.path();
    EXPECT_FALSE(contains(entry.path().filename().string(), ".tmp")) << "left behind: " << entry.path();
  }
  const fs::path previous = checkpoints / previous_dir;
  mlagpt::model::Gpt model(mlagpt::trainer::Checkpointer::stored_config(previous).model);
  EXPECT_NO_THROW(mlagpt::trainer::Checkpointer::load_weights(previous, model));

  Job again = start("disk", fmt::format("{} --run.max_steps={}", every, failed));
  const std::optional<int> again_status = again.wait(120);
  const std::string again_log = read_text(again.log);
  ASSERT_TRUE(again_status && WIFEXITED(*again_status) && WEXITSTATUS(*again_status) == 0) << again_log;
  EXPECT_TRUE(contains(again_log, "resumed from " + previous.string())) << again_log;
  EXPECT_EQ(read_text(checkpoints / "latest"), failed_dir + "\n");
}

TEST_F(Faults, Sigusr1ToMpiexecUnderAShortWatchdogTimeoutSavesAndExitsWithoutATimeout) {
  expect_preempted(
      "preempted", SIGUSR1,
      [](const Job& job) { ASSERT_EQ(kill(job.pid, SIGUSR1), 0) << "mpiexec passes SIGUSR1 on to every rank"; },
      "SIGUSR1 to mpiexec to the end of the job (a final checkpoint)");
}

TEST_F(Faults, SigtermToEveryRankUnderAShortWatchdogTimeoutSavesAndExitsWithoutATimeout) {
  expect_preempted(
      "terminated", SIGTERM,
      [](const Job& job) {  // as srun sends it: to every task
        ASSERT_EQ(kill(job.rank(0), SIGTERM), 0);
        ASSERT_EQ(kill(job.rank(1), SIGTERM), 0);
      },
      "SIGTERM to both ranks to the end of the job (a final checkpoint)");
}

}  // namespace
