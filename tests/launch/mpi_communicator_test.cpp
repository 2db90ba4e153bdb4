// Run by CTest under `mpiexec -n 2` and `-n 4`: every collective is checked on every rank against the value
// computed in closed form from the ranks' contributions.
#include "launch/mpi_communicator.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include "launch/error.h"

using mlagpt::launch::MpiCommunicator;
using mlagpt::launch::ReduceOp;

class MpiCommunicatorTest : public testing::Test {
 protected:
  MpiCommunicator comm{MPI_COMM_WORLD};
  int rank = comm.rank();
  int size = comm.size();
};

TEST_F(MpiCommunicatorTest, RunsUnderMpiexecWithSeveralRanks) {
  EXPECT_GE(size, 2);
}

TEST_F(MpiCommunicatorTest, AllReduceSumsRankDependentValuesExactly) {
  // Rank r contributes (r + 1) * [0, 1, ..., 9] + r; the sum is S * i + R(R-1)/2 with S = R(R+1)/2.
  for (auto dtype : {at::kLong, at::kDouble, at::kFloat, at::kInt}) {
    at::Tensor t = at::arange(10, dtype) * (rank + 1) + rank;
    comm.all_reduce(t, ReduceOp::kSum);
    const int64_t s = static_cast<int64_t>(size) * (size + 1) / 2;
    at::Tensor expected = at::arange(10, dtype) * s + static_cast<int64_t>(size) * (size - 1) / 2;
    EXPECT_TRUE(at::equal(t, expected)) << c10::toString(dtype);
  }
}

TEST_F(MpiCommunicatorTest, AllReduceMaxAndMin) {
  at::Tensor t = at::full({3}, static_cast<double>(rank), at::kDouble);
  comm.all_reduce(t, ReduceOp::kMax);
  EXPECT_TRUE(at::equal(t, at::full({3}, static_cast<double>(size - 1), at::kDouble)));
  t.fill_(rank + 5);
  comm.all_reduce(t, ReduceOp::kMin);
  EXPECT_TRUE(at::equal(t, at::full({3}, 5.0, at::kDouble)));
}

TEST_F(MpiCommunicatorTest, BfloatReducesThroughFloat) {
  at::Tensor t = at::full({4}, static_cast<double>(rank + 1), at::kBFloat16);
  comm.all_reduce(t, ReduceOp::kSum);
  EXPECT_EQ(t.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(t, at::full({4}, static_cast<double>(size * (size + 1) / 2), at::kBFloat16)));
}

TEST_F(MpiCommunicatorTest, ReduceScatterGivesEachRankItsChunkOfTheSum) {
  // Rank r contributes (r + 1) * i + r for i in [0, size * 3); rank r receives elements [3r, 3r + 3) of the sum,
  // S * i + R(R-1)/2. bfloat16 goes through float32 and is exact for these small integers.
  const int64_t chunk = 3;
  for (auto dtype : {at::kLong, at::kDouble, at::kFloat, at::kInt, at::kBFloat16}) {
    const at::Tensor input = at::arange(size * chunk, dtype) * (rank + 1) + rank;
    at::Tensor output = at::zeros({chunk}, dtype);
    comm.reduce_scatter(input, output, ReduceOp::kSum);
    const int64_t s = static_cast<int64_t>(size) * (size + 1) / 2;
    const at::Tensor expected =
        at::arange(rank * chunk, (rank + 1) * chunk, dtype) * s + static_cast<int64_t>(size) * (size - 1) / 2;
    EXPECT_TRUE(at::equal(output, expected)) << c10::toString(dtype);
  }
  // With max, and undone by all_gather: reduce_scatter then all_gather is an all-reduce.
  at::Tensor input = at::arange(size * chunk, at::kDouble) + rank;
  at::Tensor mine = at::zeros({chunk}, at::kDouble);
  comm.reduce_scatter(input, mine, ReduceOp::kMax);
  at::Tensor gathered = at::zeros({size * chunk}, at::kDouble);
  comm.all_gather(mine, gathered);
  comm.all_reduce(input, ReduceOp::kMax);
  EXPECT_TRUE(at::equal(gathered, input));
}

TEST_F(MpiCommunicatorTest, ReduceScatterRejectsAnOutputOfTheWrongSize) {
  at::Tensor input = at::zeros({size * 4 + 1}, at::kFloat);
  at::Tensor output = at::zeros({4}, at::kFloat);
  EXPECT_THROW(comm.reduce_scatter(input, output, ReduceOp::kSum), mlagpt::Error);
  at::Tensor wrong_dtype = at::zeros({4}, at::kDouble);
  EXPECT_THROW(comm.reduce_scatter(at::zeros({size * 4}, at::kFloat), wrong_dtype, ReduceOp::kSum), mlagpt::Error);
}

TEST_F(MpiCommunicatorTest, BroadcastCopiesTheRootsTensor) {
  const int root = size - 1;
  at::Tensor t = at::full({5}, static_cast<int64_t>(rank * 100), at::kLong);
  comm.broadcast(t, root);
  EXPECT_TRUE(at::equal(t, at::full({5}, static_cast<int64_t>(root * 100), at::kLong)));
}

TEST_F(MpiCommunicatorTest, AllGatherOrdersByRank) {
  at::Tensor mine = at::full({2}, static_cast<float>(rank), at::kFloat);
  at::Tensor all = at::zeros({2 * size}, at::kFloat);
  comm.all_gather(mine, all);
  at::Tensor expected = at::arange(size, at::kFloat).repeat_interleave(2);
  EXPECT_TRUE(at::equal(all, expected));
}

TEST_F(MpiCommunicatorTest, RejectsMismatchedGatherOutput) {
  at::Tensor mine = at::zeros({2}, at::kFloat);
  at::Tensor wrong = at::zeros({3}, at::kFloat);
  EXPECT_THROW(comm.all_gather(mine, wrong), mlagpt::Error);
}
