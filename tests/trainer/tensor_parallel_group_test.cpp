// TensorParallelGroup's sharded generators under mpiexec -n 2: a group of more than one rank has one for the CPU,
// which seed_sharded() makes reproducible and which ShardedRngScope draws from instead of the default generator
// (whose own stream goes on as if the scope had not drawn); a group of one has none, and a device the group was not
// made for is refused.
#include <ATen/ops/equal.h>
#include <ATen/ops/rand.h>
#include <gtest/gtest.h>

#include "launch/error.h"
#include "launch/mpi_communicator.h"
#include "model/tensor_parallel.h"
#include "trainer/parallel/tensor_parallel_group.h"

namespace {

using mlagpt::trainer::TensorParallelGroup;

const c10::Device kCpu(c10::kCPU);

TEST(TensorParallelGroup, SeededShardedGeneratorDrawsReproduciblyInsideTheScope) {
  mlagpt::launch::MpiCommunicator comm(MPI_COMM_WORLD);
  ASSERT_GT(comm.size(), 1);
  TensorParallelGroup group(comm);
  ASSERT_TRUE(group.sharded_generator(kCpu).defined());

  // The default stream's first draw, with no scope before it.
  at::manual_seed(5);
  const at::Tensor default_next = at::rand({4});

  at::manual_seed(5);
  group.seed_sharded(17);
  at::Tensor first;
  {
    const mlagpt::model::ShardedRngScope scope(group, kCpu);
    first = at::rand({3});
  }
  EXPECT_TRUE(at::equal(at::rand({4}), default_next)) << "the scope's draws must not advance the default stream";

  group.seed_sharded(17);
  {
    const mlagpt::model::ShardedRngScope scope(group, kCpu);
    EXPECT_TRUE(at::equal(at::rand({3}), first)) << "the same seed draws the same";
  }
  group.seed_sharded(18);
  {
    const mlagpt::model::ShardedRngScope scope(group, kCpu);
    EXPECT_FALSE(at::equal(at::rand({3}), first)) << "another seed draws otherwise";
  }
}

TEST(TensorParallelGroup, AGroupOfOneHasNoShardedGenerator) {
  mlagpt::launch::LocalCommunicator local;
  const TensorParallelGroup group(local);
  EXPECT_FALSE(group.sharded_generator(kCpu).defined());
}

TEST(TensorParallelGroup, RefusesADeviceItWasNotMadeFor) {
  mlagpt::launch::MpiCommunicator comm(MPI_COMM_WORLD);
  const TensorParallelGroup group(comm);
  EXPECT_THROW(group.sharded_generator(c10::Device(c10::kCUDA, 0)), mlagpt::Error);
}

}  // namespace
