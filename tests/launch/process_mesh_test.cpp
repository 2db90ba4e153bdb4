// Run by CTest under `mpiexec -n 2` and `-n 4`: the mesh's groups are proven by collectives over them (the world
// ranks each group gathers and sums), and every layout error is checked to be thrown by every rank, after which the
// ranks still meet in a world barrier (a rank left inside a collective would hang it). Ranks of one mpiexec share a
// machine, so the node rules are exercised by handing each rank the node it stands for (ProcessMesh's NodeIdentity
// argument).
#include "launch/process_mesh.h"

#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <functional>
#include <string>
#include <vector>

#include "launch/error.h"
#include "launch/mpi_communicator.h"
#include "support/test_runtime.h"

using mlagpt::launch::Communicator;
using mlagpt::launch::MeshOptions;
using mlagpt::launch::NodeIdentity;
using mlagpt::launch::ProcessMesh;

namespace {

// The world ranks of `comm`'s members, in the order of their ranks in `comm`.
std::vector<int64_t> members(Communicator& comm, int world_rank) {
  const at::Tensor mine = at::full({1}, static_cast<int64_t>(world_rank), at::kLong);
  at::Tensor all = at::zeros({comm.size()}, at::kLong);
  comm.all_gather(mine, all);
  return {all.data_ptr<int64_t>(), all.data_ptr<int64_t>() + all.numel()};
}

int64_t sum_of_world_ranks(Communicator& comm, int world_rank) {
  at::Tensor t = at::full({3}, static_cast<int64_t>(world_rank), at::kLong);
  comm.all_reduce(t, mlagpt::launch::ReduceOp::kSum);
  return t[0].item<int64_t>();
}

// The ranks q of [0, world) with keep(q), ascending.
std::vector<int64_t> ranks_where(int world, const std::function<bool(int)>& keep) {
  std::vector<int64_t> ranks;
  for (int q = 0; q < world; ++q) {
    if (keep(q)) {
      ranks.push_back(q);
    }
  }
  return ranks;
}

int64_t sum(const std::vector<int64_t>& values) {
  int64_t total = 0;
  for (int64_t v : values) {
    total += v;
  }
  return total;
}

class ProcessMeshTest : public testing::Test {
 protected:
  const mlagpt::launch::Runtime& runtime = mlagpt::testing::runtime();
  int rank = runtime.info().rank;
  int size = runtime.info().world_size;

  // Builds a mesh that must fail and returns its message; every rank must fail, and then all meet again.
  std::string failure(const MeshOptions& options, const NodeIdentity* node = nullptr) {
    std::string message;
    try {
      if (node != nullptr) {
        ProcessMesh mesh(runtime, options, *node);
      } else {
        ProcessMesh mesh(runtime, options);
      }
      ADD_FAILURE() << "rank " << rank << ": the mesh was built";
    } catch (const mlagpt::ConfigError& e) {
      message = e.what();
    }
    mlagpt::launch::MpiCommunicator(MPI_COMM_WORLD).barrier();
    return message;
  }

  // Checks every group against the layout: tp groups are tp consecutive ranks, dp groups stride tp.
  void expect_layout(const ProcessMesh& mesh, int tp) {
    const auto tp_group = ranks_where(size, [&](int q) { return q / tp == rank / tp; });
    const auto dp_group = ranks_where(size, [&](int q) { return q % tp == rank % tp; });
    EXPECT_EQ(members(mesh.tp(), rank), tp_group);
    EXPECT_EQ(members(mesh.dp(), rank), dp_group);
    EXPECT_EQ(sum_of_world_ranks(mesh.tp(), rank), sum(tp_group));
    EXPECT_EQ(sum_of_world_ranks(mesh.dp(), rank), sum(dp_group));
    EXPECT_EQ(mesh.tp_size(), tp);
    EXPECT_EQ(mesh.tp_rank(), rank % tp);
    EXPECT_EQ(mesh.dp_size(), size / tp);
    EXPECT_EQ(mesh.dp_rank(), rank / tp);
    EXPECT_EQ(mesh.world_rank(), rank);
    EXPECT_EQ(mesh.world_size(), size);
  }
};

}  // namespace

TEST_F(ProcessMeshTest, RunsUnderMpiexecWithSeveralRanks) {
  ASSERT_TRUE(runtime.info().mpi);
  EXPECT_GE(size, 2);
}

TEST_F(ProcessMeshTest, TpTwoGroupsConsecutiveRanksAndDpGroupsStrideTwo) {
  ProcessMesh mesh(runtime, MeshOptions{.tp = 2});
  expect_layout(mesh, 2);
  if (size == 4) {
    // Written out: tp groups {0, 1} and {2, 3}; dp groups {0, 2} and {1, 3}.
    const std::vector<std::vector<int64_t>> tp_groups = {{0, 1}, {0, 1}, {2, 3}, {2, 3}};
    const std::vector<std::vector<int64_t>> dp_groups = {{0, 2}, {1, 3}, {0, 2}, {1, 3}};
    EXPECT_EQ(members(mesh.tp(), rank), tp_groups[rank]);
    EXPECT_EQ(members(mesh.dp(), rank), dp_groups[rank]);
    EXPECT_EQ(mesh.describe(), "world 4 = dp 2 x tp 2, mpi");
  } else {
    EXPECT_EQ(mesh.describe(),
              fmt::format("world {} = dp {} x tp 2, {}", size, size / 2, size == 2 ? "dp local, tp mpi" : "mpi"));
  }
  EXPECT_TRUE(mesh.device().is_cpu());
}

TEST_F(ProcessMeshTest, TpOneIsDataParallelOverTheWholeWorld) {
  ProcessMesh mesh(runtime, MeshOptions{.tp = 1});
  expect_layout(mesh, 1);
  EXPECT_EQ(mesh.tp().backend(), "local");
  EXPECT_EQ(mesh.dp().backend(), "mpi");
  EXPECT_EQ(mesh.describe(), fmt::format("world {} = dp {} x tp 1, dp mpi, tp local", size, size));
}

TEST_F(ProcessMeshTest, TpOfTheWorldSizeIsOneTensorParallelGroup) {
  ProcessMesh mesh(runtime, MeshOptions{.tp = size});
  expect_layout(mesh, size);
  EXPECT_EQ(mesh.dp().backend(), "local");
  EXPECT_EQ(mesh.tp().backend(), "mpi");
}

TEST_F(ProcessMeshTest, TpThatDoesNotDivideTheWorldFailsOnEveryRank) {
  const std::string message = failure(MeshOptions{.tp = 3});
  EXPECT_NE(message.find("parallel.tp = 3"), std::string::npos) << message;
  EXPECT_NE(message.find(fmt::format("world size {}", size)), std::string::npos) << message;
  EXPECT_NE(failure(MeshOptions{.tp = 0}).find("parallel.tp must be at least 1, got 0"), std::string::npos);
}

TEST_F(ProcessMeshTest, RanksOfOneMachineShareANode) {
  const NodeIdentity node = mlagpt::launch::this_node(runtime);
  EXPECT_EQ(node.id, 0);
  EXPECT_EQ(node.host, runtime.info().host);
  // So a tensor-parallel group of the whole world passes the node rules without tp_across_nodes.
  ProcessMesh mesh(runtime, MeshOptions{.tp = size});
  EXPECT_EQ(mesh.tp_size(), size);
}

TEST_F(ProcessMeshTest, TpLargerThanANodeFailsUnlessAcrossNodes) {
  // Two nodes of size / 2 ranks each, placed node by node; tp = size needs both.
  const int per_node = size / 2;
  const NodeIdentity node{.id = rank / per_node * per_node, .host = rank < per_node ? "node-a" : "node-b"};
  const std::string message = failure(MeshOptions{.tp = size}, &node);
  EXPECT_NE(message.find(fmt::format("parallel.tp = {} is larger than the {} rank(s) on host node-", size, per_node)),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("parallel.tp_across_nodes = true"), std::string::npos) << message;

  ProcessMesh mesh(runtime, MeshOptions{.tp = size, .tp_across_nodes = true}, node);
  expect_layout(mesh, size);
  // Within a node's size it passes.
  ProcessMesh within(runtime, MeshOptions{.tp = per_node}, node);
  expect_layout(within, per_node);
}

TEST_F(ProcessMeshTest, TpGroupsStraddlingNodesFailUnlessAcrossNodes) {
  if (size < 4) {
    GTEST_SKIP() << "needs two nodes of at least two ranks each (4 ranks)";
  }
  // Ranks dealt round-robin over two nodes (mpirun --map-by node): every node holds size / 2 >= tp ranks, but
  // tensor-parallel group {0, 1} has a rank on each.
  const NodeIdentity node{.id = rank % 2, .host = rank % 2 == 0 ? "node-a" : "node-b"};
  const std::string message = failure(MeshOptions{.tp = 2}, &node);
  EXPECT_NE(message.find("tensor-parallel group 0 (world ranks 0..1) spans hosts node-a (rank 0) and node-b (rank 1)"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("parallel.tp_across_nodes = true"), std::string::npos) << message;
  ProcessMesh mesh(runtime, MeshOptions{.tp = 2, .tp_across_nodes = true}, node);
  expect_layout(mesh, 2);
}

TEST_F(ProcessMeshTest, OneShortNodeFailsTheRanksOfTheOthersToo) {
  if (size < 4) {
    GTEST_SKIP() << "needs a node of three ranks beside a node of one (4 ranks)";
  }
  // Ranks 0 .. size - 2 on node-a, the last alone on node-b: ranks of node-a see a node big enough for tp = 2 and
  // their own groups (but the last) on one node, yet must fail like the last rank does.
  const bool last = rank == size - 1;
  const NodeIdentity node{.id = last ? size - 1 : 0, .host = last ? "node-b" : "node-a"};
  const std::string message = failure(MeshOptions{.tp = 2}, &node);
  EXPECT_NE(message.find("parallel.tp = 2 is larger than the 1 rank(s) on host node-b"), std::string::npos) << message;
}

TEST_F(ProcessMeshTest, AnUnusableDeviceOnOneRankFailsEveryRank) {
  // Only the last rank asks for a device it does not have (no machine has 100 GPUs; this build may have no CUDA).
  const c10::Device device = rank == size - 1 ? c10::Device(c10::kCUDA, 99) : c10::Device(c10::kCPU);
  const std::string message = failure(MeshOptions{.tp = 1, .device = device});
  EXPECT_NE(message.find(fmt::format("rank {} on host {}", size - 1, runtime.info().host)), std::string::npos)
      << message;
  EXPECT_NE(message.find("cuda:99"), std::string::npos) << message;
}
