// gpu: NCCL with a group of one on device 0 — all-reduce, broadcast, all-gather and reduce-scatter of CUDA tensors.
#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include "launch/backend_versions.h"
#include "launch/nccl_communicator.h"
#include "support/prerequisites.h"

TEST(NcclCommunicator, GroupOfOneAllReducesOnTheDevice) {
  MLAGPT_REQUIRE_GPU(mlagpt::launch::cuda_device_count() > 0, "no CUDA device: the NCCL test needs one");
  mlagpt::launch::NcclCommunicator comm(MPI_COMM_NULL, 0);
  EXPECT_EQ(comm.size(), 1);
  const auto options = at::TensorOptions().dtype(at::kFloat).device(at::kCUDA, 0);
  at::Tensor t = at::arange(1000, options);
  comm.all_reduce(t, mlagpt::launch::ReduceOp::kSum);
  EXPECT_TRUE(at::equal(t.cpu(), at::arange(1000, at::kFloat)));
  at::Tensor gathered = at::zeros({1000}, options);
  comm.all_gather(t, gathered);
  EXPECT_TRUE(at::equal(gathered.cpu(), at::arange(1000, at::kFloat)));
  at::Tensor scattered = at::zeros({1000}, options);
  comm.reduce_scatter(t, scattered, mlagpt::launch::ReduceOp::kSum);
  EXPECT_TRUE(at::equal(scattered.cpu(), at::arange(1000, at::kFloat)));
  comm.barrier();
}
