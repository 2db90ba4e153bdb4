// A real two-node `mlagpt train` on one machine: `mpiexec --host 127.0.0.2:2,127.0.0.3:2` with
// tests/support/fake_node_agent.sh as Open MPI's rsh agent, which starts each node's daemon here under the node's
// own hostname (a UTS namespace), its ranks talking to the other node's over loopback TCP. It checks what only
// several nodes show: the local ranks of each node, tensor-parallel groups kept inside a node (and the meshes that
// would cross nodes refused on every rank), every rank's metrics on its node's own address at port + local rank,
// SIGUSR1 pre-emption reaching the ranks of both nodes, and that dp 2 x tp 2 over the two nodes trains as one process.
// Where the agent cannot make namespaces (no privileges), the nodes share the machine's hostname: the hostname and
// metrics checks are skipped with a message, the rest runs.
#include <ATen/ops/allclose.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <random>
#include <regex>
#include <thread>

#include "model/gpt.h"
#include "support/small_dataset.h"
#include "support/temp_dir.h"
#include "support/training_curve.h"
#include "trainer/checkpointer.h"

namespace fs = std::filesystem;

namespace {

const std::string kAgent = std::string(MLAGPT_SOURCE_DIR) + "/tests/support/fake_node_agent.sh";
const std::string kHosts = "127.0.0.2:2,127.0.0.3:2";

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class TwoNodes : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<mlagpt::testing::TempDir>();
    mlagpt::testing::prepare_small_byte_dataset(dir_->path());
    mode_ = mlagpt::testing::run_command(kAgent + " --check");
    mode_.erase(mode_.find_last_not_of('\n') + 1);
  }
  static void TearDownTestSuite() { dir_.reset(); }

  static bool own_hostnames() { return mode_ == "uts" || mode_ == "userns"; }

  // The mlagpt arguments of run `run`: the tiny MLA model of the data-parallel tests with 4 samples per step in all.
  static std::string arguments(const std::string& run, int64_t batch, int64_t max_steps, const std::string& extra) {
    return fmt::format(
        "train --resume auto --run.out_dir={} --run.device=cpu --run.threads=1 --run.max_steps={} --run.log_every=1 "
        "--data.dir={} --data.batch_size={} --data.seq_len=32 --model.block_size=32 --model.n_layer=2 "
        "--model.n_embd=32 --model.n_head=4 --model.kv_lora_rank=16 --model.qk_nope_head_dim=8 "
        "--model.qk_rope_head_dim=4 --model.v_head_dim=8 --optim.lr=3e-3 --schedule.warmup_steps=2 "
        "--schedule.decay_steps=8 --schedule.min_lr=3e-4 --eval.every=3 --eval.batches=2 --checkpoint.every=0 {}",
        (*dir_ / run).string(), max_steps, (*dir_ / "data").string(), batch, extra);
  }

  // mpiexec over the two simulated nodes (4 ranks), or one process when `nodes` is false.
  static std::string command(const std::string& run, bool nodes, int64_t max_steps, const std::string& extra,
                             const std::string& mpiexec_extra = "") {
    if (!nodes) {
      return fmt::format("{} {}", MLAGPT_EXECUTABLE, arguments(run, 4, max_steps, extra));
    }
    return fmt::format(
        "{} --mca plm_rsh_agent {} --mca oob_tcp_if_include lo --mca btl_tcp_if_include lo --host {} -np 4 {} {} {}",
        MLAGPT_MPIEXEC, kAgent, kHosts, mpiexec_extra, MLAGPT_EXECUTABLE, arguments(run, 2, max_steps, extra));
  }

  static std::string run(const std::string& line, int* status) {
    return mlagpt::testing::run_command(line + " 2>&1", status);
  }

  static std::vector<at::Tensor> weights(const std::string& run, int64_t step) {
    const fs::path checkpoint = *dir_ / run / "checkpoints" / fmt::format("step_{:08d}", step);
    mlagpt::model::Gpt model(mlagpt::trainer::Checkpointer::stored_config(checkpoint).model);
    mlagpt::trainer::Checkpointer::load_weights(checkpoint, model);
    return model.parameters();
  }

  static inline std::unique_ptr<mlagpt::testing::TempDir> dir_;
  static inline std::string mode_;
};

TEST_F(TwoNodes, RanksLandNodeByNodeWithTensorParallelGroupsInsideANode) {
  int status = 0;
  const std::string log = run(command("placement", true, 2, "--parallel.tp=2"), &status);
  ASSERT_EQ(status, 0) << log;
  std::cout << "[ note ] fake node mode: " << mode_ << "\n";
  // world rank r: node r / 2, local rank r % 2; tp = 2 groups {0, 1} and {2, 3}: tp rank r % 2, dp rank r / 2.
  for (int r = 0; r < 4; ++r) {
    const std::string host = own_hostnames() ? (r < 2 ? "127.0.0.2" : "127.0.0.3") : "[^ ]+";
    const std::regex line(fmt::format(
        R"(\[rank {}\] \[info\] \[launch\] rank {}/4 on host {} \(pid \d+\): local rank {}/2, dp rank {}/2, tp rank )"
        R"({}/2, device cpu)",
        r, r, host, r % 2, r / 2, r % 2));
    EXPECT_TRUE(std::regex_search(log, line)) << "rank " << r << ":\n" << log;
  }
  EXPECT_TRUE(contains(log, "world 4 = dp 2 x tp 2")) << log;
}

TEST_F(TwoNodes, MeshesWhoseTensorParallelGroupsCrossNodesAreRefusedOnEveryRank) {
  int status = 0;
  const std::string wide = run(command("refused_tp4", true, 2, "--parallel.tp=4"), &status);
  EXPECT_NE(status, 0) << wide;
  EXPECT_TRUE(contains(wide, "parallel.tp = 4 is larger than the 2 rank(s) on host")) << wide;
  const std::string round_robin = run(command("refused_by_node", true, 2, "--parallel.tp=2", "--map-by node"), &status);
  EXPECT_NE(status, 0) << round_robin;
  EXPECT_TRUE(contains(round_robin, "tensor-parallel group 0 (world ranks 0..1) spans hosts")) << round_robin;
  // tp_across_nodes allows it.
  const std::string allowed = run(
      command("allowed_by_node", true, 1, "--parallel.tp=2 --parallel.tp_across_nodes=true", "--map-by node"), &status);
  EXPECT_EQ(status, 0) << allowed;
}

TEST_F(TwoNodes, DataAndTensorParallelOverTwoNodesTrainsAsOneProcess) {
  constexpr int64_t kSteps = 6;
  const std::string checkpoint = fmt::format("--checkpoint.every={}", kSteps);
  int status = 0;
  const std::string one = run(command("one", false, kSteps, checkpoint), &status);
  ASSERT_EQ(status, 0) << one;
  const std::string two = run(command("two_nodes", true, kSteps, checkpoint + " --parallel.tp=2"), &status);
  ASSERT_EQ(status, 0) << two;
  const auto a = mlagpt::testing::read_training_curve(*dir_ / "two_nodes");
  const auto b = mlagpt::testing::read_training_curve(*dir_ / "one");
  ASSERT_EQ(a.train.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(b.train.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(a.eval.size(), b.eval.size());
  constexpr double kTolerance = 1e-4;  // float sums in another order (data_parallel_test.cpp)
  for (size_t i = 0; i < a.train.size(); ++i) {
    EXPECT_NEAR(a.train[i], b.train[i], kTolerance * std::abs(b.train[i])) << "loss of step " << i + 1;
    EXPECT_NEAR(a.grad_norm[i], b.grad_norm[i], kTolerance * std::abs(b.grad_norm[i])) << "step " << i + 1;
  }
  for (size_t i = 0; i < a.eval.size(); ++i) {
    EXPECT_NEAR(a.eval[i], b.eval[i], kTolerance * std::abs(b.eval[i])) << "evaluation " << i;
  }
  const std::vector<at::Tensor> wa = weights("two_nodes", kSteps);
  const std::vector<at::Tensor> wb = weights("one", kSteps);
  ASSERT_EQ(wa.size(), wb.size());
  for (size_t i = 0; i < wa.size(); ++i) {
    EXPECT_TRUE(at::allclose(wa[i], wb[i], kTolerance, kTolerance)) << "parameter " << i;
  }
}

TEST_F(TwoNodes, EveryRankServesMetricsOnItsNodesAddressAndSigusr1StopsBothNodes) {
  if (!own_hostnames()) {
    GTEST_SKIP() << "the fake nodes share this machine's hostname (agent mode " << mode_
                 << ": no UTS namespace allowed here), so they cannot listen on addresses of their own";
  }
  std::mt19937 random(std::random_device{}());
  const int port = 20000 + static_cast<int>(random() % 20000);
  const fs::path log_file = *dir_ / "metrics.log";
  const std::string line =
      fmt::format("exec {} > {} 2>&1",
                  command("metrics", true, 100000, fmt::format("--monitoring.metrics_address={{host}}:{}", port)),
                  log_file.string());
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", line.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Every rank serves before its first step; step 3 is well past that on all of them.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!contains(read_text(log_file), "step      3/") && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const std::string log = read_text(log_file);
  for (int r = 0; r < 4; ++r) {
    const std::string host = r < 2 ? "127.0.0.2" : "127.0.0.3";
    const std::string address = fmt::format("{}:{}", host, port + r % 2);
    EXPECT_TRUE(contains(
        log, fmt::format("[rank {}] [info] metrics: serving Prometheus metrics at http://{}/metrics", r, address)))
        << log;
    const std::string body = mlagpt::testing::http_get(static_cast<uint16_t>(port + r % 2), "/metrics", host);
    EXPECT_TRUE(contains(body, "200 OK")) << address << "\n" << body;
    // Labelled with its own (world) rank, among the constant labels of every series.
    EXPECT_TRUE(std::regex_search(body, std::regex(fmt::format(R"(mlagpt_train_loss\{{[^}}]*\brank="{}")", r))))
        << address << "\n"
        << body;
  }
  ASSERT_EQ(kill(pid, SIGUSR1), 0);
  int status = 0;
  waitpid(pid, &status, 0);
  const std::string stopped = read_text(log_file);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGUSR1) << stopped;
  EXPECT_TRUE(contains(stopped, "SIGUSR1: stopped at step")) << stopped;
  EXPECT_FALSE(contains(stopped, "[watchdog]")) << stopped;
}

TEST_F(TwoNodes, NoDaemonOutlivesTheJobs) {
  int status = 0;
  mlagpt::testing::run_command("pgrep -x orted", &status);
  EXPECT_NE(status, 0) << "an orted is still running";
}

}  // namespace
