// gpu: NCCL with a group of one on device 0 — all-reduce, broadcast, all-gather and reduce-scatter of CUDA tensors,
// blocking and async. In a group of one every collective is a copy, so the async tests check what the streams do:
// the comm stream waits for the caller's current stream, wait() orders the then-current stream after the collective,
// and the caching allocator does not hand a collective's memory out again while the comm stream still uses it.
#include <ATen/TensorOperators.h>
#include <ATen/cuda/Sleep.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/remainder.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <memory>

#include "launch/backend_versions.h"
#include "launch/error.h"
#include "launch/nccl_communicator.h"
#include "support/prerequisites.h"

using mlagpt::launch::ReduceOp;

namespace {

// About 0.1 s of spinning on an H100/H200 (clock64 at ~2 GHz): long enough that the host issues everything after
// it while it runs.
constexpr int64_t kSpinCycles = 200'000'000;

at::Tensor values(int64_t rows, int64_t cols, at::ScalarType dtype) {
  return at::remainder(at::arange(rows * cols, at::kDouble) * 5 + 2, 17.0).view({rows, cols}).to(dtype);
}

at::TensorOptions on_device(at::ScalarType dtype) {
  return at::TensorOptions().dtype(dtype).device(at::kCUDA, 0);
}

}  // namespace

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

TEST(NcclCommunicator, AsyncCollectivesEqualTheBlockingOnes) {
  MLAGPT_REQUIRE_GPU(mlagpt::launch::cuda_device_count() > 0, "no CUDA device: the NCCL test needs one");
  mlagpt::launch::NcclCommunicator comm(MPI_COMM_NULL, 0);
  for (auto dtype : {at::kFloat, at::kBFloat16, at::kLong}) {
    const at::Tensor expected = values(13, 6, dtype);
    for (auto op : {ReduceOp::kSum, ReduceOp::kMax}) {
      at::Tensor blocking = expected.to(at::kCUDA);
      comm.all_reduce(blocking, op);
      at::Tensor async = expected.to(at::kCUDA);
      comm.all_reduce_async(async, op)->wait();
      EXPECT_TRUE(at::equal(async.cpu(), blocking.cpu())) << c10::toString(dtype);
      EXPECT_TRUE(at::equal(async.cpu(), expected)) << c10::toString(dtype);

      at::Tensor scattered = at::zeros({13, 6}, on_device(dtype));
      comm.reduce_scatter_async(expected.to(at::kCUDA), scattered, op)->wait();
      EXPECT_TRUE(at::equal(scattered.cpu(), expected)) << c10::toString(dtype);
    }
    at::Tensor gathered = at::zeros({13, 6}, on_device(dtype));
    comm.all_gather_async(expected.to(at::kCUDA), gathered)->wait();
    EXPECT_TRUE(at::equal(gathered.cpu(), expected)) << c10::toString(dtype);
  }
  at::Tensor host = values(3, 4, at::kFloat);
  EXPECT_THROW(comm.all_reduce_async(host, ReduceOp::kSum), mlagpt::Error);
  at::Tensor short_output = at::zeros({11}, on_device(at::kFloat));
  EXPECT_THROW(comm.reduce_scatter_async(values(3, 4, at::kFloat).to(at::kCUDA), short_output, ReduceOp::kSum),
               mlagpt::Error);
}

TEST(NcclCommunicator, AsyncIsOrderedAfterTheIssuingStreamAndBeforeTheWaitingOne) {
  MLAGPT_REQUIRE_GPU(mlagpt::launch::cuda_device_count() > 0, "no CUDA device: the NCCL test needs one");
  mlagpt::launch::NcclCommunicator comm(MPI_COMM_NULL, 0);
  const at::Tensor expected = values(517, 3, at::kFloat);
  const at::Tensor source = expected.to(at::kCUDA);
  at::Tensor input = at::zeros({517, 3}, on_device(at::kFloat));
  at::Tensor output = at::zeros({517, 3}, on_device(at::kFloat));
  c10::cuda::CUDAStream issuing = c10::cuda::getStreamFromPool(false, 0);
  c10::cuda::CUDAStream waiting = c10::cuda::getStreamFromPool(false, 0);
  std::unique_ptr<mlagpt::launch::Work> work;
  {
    // The input is written at the end of a spin on the issuing stream: a collective not ordered after that stream
    // would copy zeros, and would be finished before the spin is.
    const c10::cuda::CUDAStreamGuard guard(issuing);
    at::cuda::sleep(kSpinCycles);
    input.copy_(source);
    work = comm.reduce_scatter_async(input, output, ReduceOp::kSum);
    EXPECT_FALSE(work->test()) << "the collective did not wait for the issuing stream's spin";
  }
  {
    // An idle stream: without wait(), its copy to the host would run at once and read the zeros.
    const c10::cuda::CUDAStreamGuard guard(waiting);
    work->wait();
    EXPECT_TRUE(at::equal(output.cpu(), expected));
  }
  c10::cuda::device_synchronize();
  EXPECT_TRUE(work->test());
}

TEST(NcclCommunicator, MemoryOfAnUnfinishedCollectiveIsNotHandedOutAgain) {
  MLAGPT_REQUIRE_GPU(mlagpt::launch::cuda_device_count() > 0, "no CUDA device: the NCCL test needs one");
  mlagpt::launch::NcclCommunicator comm(MPI_COMM_NULL, 0);
  c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool(false, 0);
  const c10::cuda::CUDAStreamGuard guard(stream);
  // A fresh segment for the input, at whose start it sits: once freed (and not protected), the caching allocator
  // would give exactly that block to the next request of its size on this stream.
  c10::cuda::CUDACachingAllocator::emptyCache();
  const at::Tensor expected = values(1031, 1033, at::kFloat);
  at::Tensor output = at::zeros({1031, 1033}, on_device(at::kFloat));
  const void* freed = nullptr;
  std::unique_ptr<mlagpt::launch::Work> work;
  {
    at::Tensor input = expected.to(at::kCUDA);
    at::cuda::sleep(kSpinCycles);  // keeps the comm stream behind this stream while the host goes on
    freed = input.data_ptr();
    work = comm.reduce_scatter_async(input, output, ReduceOp::kSum);
  }
  const at::Tensor fresh = at::empty({1031, 1033}, on_device(at::kFloat));
  EXPECT_NE(fresh.data_ptr(), freed) << "the input's memory was reused while the collective had not run";
  // Once the Work is gone, the allocator still knows the comm stream uses the memory (recordStream).
  work->wait();
  work.reset();
  const at::Tensor after_work = at::empty({1031, 1033}, on_device(at::kFloat));
  EXPECT_NE(after_work.data_ptr(), freed) << "the input's memory was reused while the comm stream may still read it";
  EXPECT_TRUE(at::equal(output.cpu(), expected));
}
