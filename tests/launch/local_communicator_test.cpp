#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include "launch/communicator.h"
#include "launch/error.h"

using mlagpt::launch::LocalCommunicator;

TEST(LocalCommunicator, CollectivesOfOneLeaveDataAsItIs) {
  LocalCommunicator comm;
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.size(), 1);
  at::Tensor t = at::arange(6, at::kFloat);
  const at::Tensor before = t.clone();
  comm.all_reduce(t, mlagpt::launch::ReduceOp::kSum);
  EXPECT_TRUE(at::equal(t, before));
  comm.broadcast(t, 0);
  EXPECT_TRUE(at::equal(t, before));
  at::Tensor gathered = at::zeros({6}, at::kFloat);
  comm.all_gather(t, gathered);
  EXPECT_TRUE(at::equal(gathered, before));
  at::Tensor scattered = at::zeros({6}, at::kFloat);
  comm.reduce_scatter(t, scattered, mlagpt::launch::ReduceOp::kSum);
  EXPECT_TRUE(at::equal(scattered, before));
  at::Tensor short_output = at::zeros({5}, at::kFloat);
  EXPECT_THROW(comm.reduce_scatter(t, short_output, mlagpt::launch::ReduceOp::kSum), mlagpt::Error);
}

TEST(LocalCommunicator, RejectsNonContiguousTensorsAndMissingRoots) {
  LocalCommunicator comm;
  at::Tensor t = at::arange(12, at::kFloat).view({3, 4}).t();
  EXPECT_THROW(comm.all_reduce(t, mlagpt::launch::ReduceOp::kSum), mlagpt::Error);
  at::Tensor ok = at::arange(3, at::kFloat);
  EXPECT_THROW(comm.broadcast(ok, 1), mlagpt::Error);
}

TEST(LocalCommunicator, AsyncCollectivesAreTheBlockingOnesWithAFinishedWork) {
  // The base-class fallbacks: the collective has run when the call returns, so the Work is already complete.
  LocalCommunicator comm;
  const at::Tensor before = at::arange(15, at::kFloat).view({3, 5});
  at::Tensor t = before.clone();
  auto reduce = comm.all_reduce_async(t, mlagpt::launch::ReduceOp::kSum);
  EXPECT_TRUE(reduce->test());
  reduce->wait();
  reduce->wait();
  EXPECT_TRUE(at::equal(t, before));

  at::Tensor gathered = at::zeros({3, 5}, at::kFloat);
  auto gather = comm.all_gather_async(t, gathered);
  EXPECT_TRUE(gather->test());
  EXPECT_TRUE(at::equal(gathered, before));

  at::Tensor scattered = at::zeros({15}, at::kFloat);
  auto scatter = comm.reduce_scatter_async(t, scattered, mlagpt::launch::ReduceOp::kMax);
  EXPECT_TRUE(scatter->test());
  EXPECT_TRUE(at::equal(scattered, before.flatten()));
}

TEST(LocalCommunicator, AsyncCollectivesRejectWhatTheBlockingOnesReject) {
  LocalCommunicator comm;
  at::Tensor transposed = at::arange(12, at::kFloat).view({3, 4}).t();
  EXPECT_THROW(comm.all_reduce_async(transposed, mlagpt::launch::ReduceOp::kSum), mlagpt::Error);
  const at::Tensor t = at::arange(6, at::kFloat);
  at::Tensor short_output = at::zeros({5}, at::kFloat);
  EXPECT_THROW(comm.reduce_scatter_async(t, short_output, mlagpt::launch::ReduceOp::kSum), mlagpt::Error);
  EXPECT_THROW(comm.all_gather_async(t, short_output), mlagpt::Error);
}
