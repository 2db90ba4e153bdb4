// cpu: the mesh of a process run without a launcher (no MPI): dp 1 x tp 1 over LocalCommunicators, and the size
// rule still applied.
#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <gtest/gtest.h>

#include <string>

#include "launch/error.h"
#include "launch/process_mesh.h"
#include "support/test_runtime.h"

using mlagpt::launch::MeshOptions;
using mlagpt::launch::ProcessMesh;

TEST(ProcessMeshLocal, OneProcessIsOneByOneOverLocalCommunicators) {
  const auto& runtime = mlagpt::testing::runtime();
  ASSERT_FALSE(runtime.info().mpi) << "this test runs without mpiexec";
  ProcessMesh mesh(runtime, MeshOptions{});
  EXPECT_EQ(mesh.dp().backend(), "local");
  EXPECT_EQ(mesh.tp().backend(), "local");
  EXPECT_EQ(mesh.dp_size(), 1);
  EXPECT_EQ(mesh.tp_size(), 1);
  EXPECT_EQ(mesh.dp_rank(), 0);
  EXPECT_EQ(mesh.tp_rank(), 0);
  EXPECT_EQ(mesh.world_size(), 1);
  EXPECT_EQ(mesh.describe(), "world 1 = dp 1 x tp 1, local");
  at::Tensor t = at::arange(7, at::kFloat);
  mesh.dp().all_reduce(t, mlagpt::launch::ReduceOp::kSum);
  mesh.tp().all_reduce(t, mlagpt::launch::ReduceOp::kSum);
  EXPECT_TRUE(at::equal(t, at::arange(7, at::kFloat)));
}

TEST(ProcessMeshLocal, TpAboveOneFailsForOneProcess) {
  try {
    ProcessMesh mesh(mlagpt::testing::runtime(), MeshOptions{.tp = 2, .tp_across_nodes = true});
    FAIL() << "the mesh was built";
  } catch (const mlagpt::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("parallel.tp = 2 does not divide the world size 1"), std::string::npos)
        << e.what();
  }
}

TEST(ProcessMeshLocal, AMissingCudaDeviceFailsBeforeAnyGroupIsBuilt) {
  EXPECT_THROW(ProcessMesh(mlagpt::testing::runtime(), MeshOptions{.device = c10::Device(c10::kCUDA, 99)}),
               mlagpt::ConfigError);
}
