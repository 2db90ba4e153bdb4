// Run by CTest under `mpiexec -n 2` and `-n 4`: every collective is checked on every rank against the value
// computed in closed form from the ranks' contributions, or (the async ones) reduced in float64 in this process
// from every rank's contribution.
#include "launch/mpi_communicator.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/maximum.h>
#include <ATen/ops/remainder.h>
#include <ATen/ops/zeros.h>
#include <c10/core/Storage.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

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

// --- The async collectives (issue 10) -------------------------------------------------------------------------------
// Every rank builds every rank's contribution, so the expected result is a float64 reduction in this process.

namespace {

// Rank r's tensor of `shape`: small integers that differ between ranks in a way that makes neither sum nor max
// trivial, and that bfloat16 holds exactly (at most 12 per rank, so sums stay below 256).
at::Tensor contribution(int r, at::IntArrayRef shape, at::ScalarType dtype) {
  int64_t numel = 1;
  for (int64_t d : shape) {
    numel *= d;
  }
  return at::remainder(at::arange(numel, at::kDouble) * (r + 1) + 3 * r, 13.0).view(shape).to(dtype);
}

// The reduction over all `ranks` contributions, computed in float64 and converted to `dtype`.
at::Tensor reduced(int ranks, at::IntArrayRef shape, at::ScalarType dtype, ReduceOp op) {
  at::Tensor result = contribution(0, shape, at::kDouble);
  for (int r = 1; r < ranks; ++r) {
    const at::Tensor next = contribution(r, shape, at::kDouble);
    result = op == ReduceOp::kSum ? result + next : at::maximum(result, next);
  }
  return result.to(dtype);
}

const char* op_name(ReduceOp op) {
  return op == ReduceOp::kSum ? "sum" : "max";
}

constexpr at::ScalarType kAsyncDtypes[] = {at::kFloat, at::kDouble, at::kLong, at::kBFloat16};
constexpr ReduceOp kAsyncOps[] = {ReduceOp::kSum, ReduceOp::kMax};

}  // namespace

TEST_F(MpiCommunicatorTest, AsyncAllReduceEqualsBlockingAndTheReference) {
  const std::vector<int64_t> shape = {3, 5};
  for (auto dtype : kAsyncDtypes) {
    for (auto op : kAsyncOps) {
      at::Tensor blocking = contribution(rank, shape, dtype);
      comm.all_reduce(blocking, op);
      at::Tensor async = contribution(rank, shape, dtype);
      auto work = comm.all_reduce_async(async, op);
      work->wait();
      const at::Tensor expected = reduced(size, shape, dtype, op);
      EXPECT_EQ(async.scalar_type(), dtype);
      EXPECT_TRUE(at::equal(blocking, expected)) << c10::toString(dtype) << " " << op_name(op);
      EXPECT_TRUE(at::equal(async, expected)) << c10::toString(dtype) << " " << op_name(op);
    }
  }
}

TEST_F(MpiCommunicatorTest, AsyncReduceScatterEqualsBlockingAndTheReference) {
  // Input [R * 7, 3], output [7, 3]: rank r receives rows [7r, 7r + 7) of the reduction.
  const int64_t rows = 7;
  const std::vector<int64_t> shape = {size * rows, 3};
  for (auto dtype : kAsyncDtypes) {
    for (auto op : kAsyncOps) {
      const at::Tensor input = contribution(rank, shape, dtype);
      at::Tensor blocking = at::zeros({rows, 3}, dtype);
      comm.reduce_scatter(input, blocking, op);
      at::Tensor async = at::zeros({rows, 3}, dtype);
      auto work = comm.reduce_scatter_async(input, async, op);
      work->wait();
      const at::Tensor expected = reduced(size, shape, dtype, op).slice(0, rank * rows, (rank + 1) * rows);
      EXPECT_TRUE(at::equal(blocking, expected)) << c10::toString(dtype) << " " << op_name(op);
      EXPECT_TRUE(at::equal(async, expected)) << c10::toString(dtype) << " " << op_name(op);
      EXPECT_TRUE(at::equal(input, contribution(rank, shape, dtype))) << "the input must not change";
    }
  }
}

TEST_F(MpiCommunicatorTest, AsyncAllGatherEqualsBlockingAndTheReference) {
  // Each rank's [3, 5] lands at rows [3r, 3r + 3) of the [R * 3, 5] output.
  for (auto dtype : kAsyncDtypes) {
    const at::Tensor input = contribution(rank, {3, 5}, dtype);
    at::Tensor blocking = at::zeros({size * 3, 5}, dtype);
    comm.all_gather(input, blocking);
    at::Tensor async = at::zeros({size * 3, 5}, dtype);
    auto work = comm.all_gather_async(input, async);
    work->wait();
    std::vector<at::Tensor> parts;
    for (int r = 0; r < size; ++r) {
      parts.push_back(contribution(r, {3, 5}, dtype));
    }
    const at::Tensor expected = at::cat(parts, 0);
    EXPECT_TRUE(at::equal(blocking, expected)) << c10::toString(dtype);
    EXPECT_TRUE(at::equal(async, expected)) << c10::toString(dtype);
  }
}

TEST_F(MpiCommunicatorTest, OutstandingWorksCompleteWhateverOrderTheyAreWaitedIn) {
  // Six collectives in flight at once (two of them bfloat16, each through its own float32 copy), with a blocking
  // one issued among them; each rank waits for them in its own order (a rank-dependent rotation of the reverse).
  at::Tensor sum = contribution(rank, {4, 9}, at::kFloat);
  at::Tensor max = contribution(rank, {6, 5}, at::kBFloat16);
  at::Tensor bf16_sum = contribution(rank, {3, 7}, at::kBFloat16);
  const at::Tensor scatter_in = contribution(rank, {size * 5, 2}, at::kDouble);
  at::Tensor scatter_out = at::zeros({5, 2}, at::kDouble);
  const at::Tensor gather_in = contribution(rank, {2, 11}, at::kLong);
  at::Tensor gather_out = at::zeros({size * 2, 11}, at::kLong);
  at::Tensor blocking = contribution(rank, {3, 8}, at::kDouble);
  at::Tensor last = contribution(rank, {7, 4}, at::kLong);

  std::vector<std::unique_ptr<mlagpt::launch::Work>> works;
  works.push_back(comm.all_reduce_async(sum, ReduceOp::kSum));
  works.push_back(comm.all_reduce_async(max, ReduceOp::kMax));
  works.push_back(comm.all_reduce_async(bf16_sum, ReduceOp::kSum));
  works.push_back(comm.reduce_scatter_async(scatter_in, scatter_out, ReduceOp::kSum));
  comm.all_reduce(blocking, ReduceOp::kMax);
  works.push_back(comm.all_gather_async(gather_in, gather_out));
  works.push_back(comm.all_reduce_async(last, ReduceOp::kSum));
  const int n = static_cast<int>(works.size());
  for (int i = 0; i < n; ++i) {
    works[static_cast<size_t>((n - 1 - i + rank) % n)]->wait();
  }

  EXPECT_TRUE(at::equal(sum, reduced(size, {4, 9}, at::kFloat, ReduceOp::kSum)));
  EXPECT_TRUE(at::equal(max, reduced(size, {6, 5}, at::kBFloat16, ReduceOp::kMax)));
  EXPECT_TRUE(at::equal(bf16_sum, reduced(size, {3, 7}, at::kBFloat16, ReduceOp::kSum)));
  EXPECT_TRUE(at::equal(scatter_out,
                        reduced(size, {size * 5, 2}, at::kDouble, ReduceOp::kSum).slice(0, rank * 5, rank * 5 + 5)));
  EXPECT_TRUE(at::equal(blocking, reduced(size, {3, 8}, at::kDouble, ReduceOp::kMax)));
  std::vector<at::Tensor> parts;
  for (int r = 0; r < size; ++r) {
    parts.push_back(contribution(r, {2, 11}, at::kLong));
  }
  EXPECT_TRUE(at::equal(gather_out, at::cat(parts, 0)));
  EXPECT_TRUE(at::equal(last, reduced(size, {7, 4}, at::kLong, ReduceOp::kSum)));
}

TEST_F(MpiCommunicatorTest, TestCompletesTheWorkAndWaitAfterwardsChangesNothing) {
  // bfloat16 goes through a float32 copy, so completion must copy the result back; test() alone has to do it.
  at::Tensor t = contribution(rank, {5, 3}, at::kBFloat16);
  auto work = comm.all_reduce_async(t, ReduceOp::kSum);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool completed = false;
  while (!completed && std::chrono::steady_clock::now() < deadline) {
    completed = work->test();
  }
  ASSERT_TRUE(completed) << "test() never reported completion";
  EXPECT_TRUE(at::equal(t, reduced(size, {5, 3}, at::kBFloat16, ReduceOp::kSum)));
  EXPECT_TRUE(work->test());
  // The tensor is the caller's again: neither wait() may copy the float32 result over it a second time.
  t.fill_(-1);
  work->wait();
  work->wait();
  EXPECT_TRUE(at::equal(t, at::full({5, 3}, -1.0, at::kBFloat16)));

  // And wait twice without test().
  at::Tensor u = contribution(rank, {2, 9}, at::kBFloat16);
  auto second = comm.all_reduce_async(u, ReduceOp::kMax);
  second->wait();
  EXPECT_TRUE(at::equal(u, reduced(size, {2, 9}, at::kBFloat16, ReduceOp::kMax)));
  u.fill_(-2);
  second->wait();
  EXPECT_TRUE(second->test());
  EXPECT_TRUE(at::equal(u, at::full({2, 9}, -2.0, at::kBFloat16)));
}

TEST_F(MpiCommunicatorTest, AsyncWorkHoldsTheCallersTensorsUntilItCompletes) {
  // The caller may drop its tensors while a collective is in flight: the Work keeps their storage alive, since MPI
  // still reads and writes it, and lets go of it once the collective has completed.
  using WeakStorage = c10::weak_intrusive_ptr<c10::StorageImpl>;
  auto dropped_while_running = [&](const char* what, at::Tensor& input, at::Tensor& output, auto&& start) {
    const WeakStorage weak_input = input.storage().getWeakStorageImpl();
    const WeakStorage weak_output = output.storage().getWeakStorageImpl();
    auto work = start();
    input.reset();
    output.reset();
    EXPECT_FALSE(weak_input.expired()) << what << ": the input was freed while MPI may still use it";
    EXPECT_FALSE(weak_output.expired()) << what << ": the output was freed while MPI may still use it";
    work->wait();
    EXPECT_TRUE(weak_input.expired()) << what << ": the completed Work still holds the input";
    EXPECT_TRUE(weak_output.expired()) << what << ": the completed Work still holds the output";
  };
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    at::Tensor tensor = contribution(rank, {40, 3}, dtype);
    at::Tensor same = tensor;
    dropped_while_running("all_reduce", tensor, same, [&] { return comm.all_reduce_async(same, ReduceOp::kSum); });
    at::Tensor input = contribution(rank, {size * 4, 9}, dtype);
    at::Tensor output = at::zeros({4, 9}, dtype);
    dropped_while_running("reduce_scatter", input, output,
                          [&] { return comm.reduce_scatter_async(input, output, ReduceOp::kMax); });
    at::Tensor part = contribution(rank, {4, 9}, dtype);
    at::Tensor whole = at::zeros({size * 4, 9}, dtype);
    dropped_while_running("all_gather", part, whole, [&] { return comm.all_gather_async(part, whole); });
  }
}

TEST_F(MpiCommunicatorTest, DestroyingAnUnfinishedWorkWaitsForIt) {
  // 1 MB of float32 goes in fragments that need MPI's progress: unless the destructor waits, `t` is not reduced yet.
  at::Tensor t = contribution(rank, {512, 521}, at::kFloat);
  comm.all_reduce_async(t, ReduceOp::kMax).reset();
  EXPECT_TRUE(at::equal(t, reduced(size, {512, 521}, at::kFloat, ReduceOp::kMax)));
}

TEST_F(MpiCommunicatorTest, AsyncArgumentErrorsAreTheBlockingOnesAndStartNothing) {
  // Every rank passes the same locally inconsistent arguments. Each async call must throw what the blocking one
  // throws, before MPI starts anything: the outputs keep their sentinel even after MPI has had the chance to
  // progress (the barrier), and the communicator still works afterwards.
  auto message_of = [](auto&& call) -> std::string {
    try {
      call();
    } catch (const mlagpt::Error& error) {
      return error.what();
    }
    return "(no error)";
  };
  std::vector<std::unique_ptr<mlagpt::launch::Work>> started;
  auto expect_same_error = [&](const char* what, auto&& blocking, auto&& async) {
    const std::string expected = message_of(blocking);
    EXPECT_NE(expected, "(no error)") << what;
    EXPECT_EQ(message_of([&] { started.push_back(async()); }), expected) << what;
  };

  // all_reduce of a transposed (non-contiguous) view: MPI would reduce the storage under it.
  at::Tensor storage = contribution(rank, {5, 3}, at::kFloat);
  at::Tensor transposed = storage.t();
  expect_same_error(
      "all_reduce, non-contiguous", [&] { comm.all_reduce(transposed, ReduceOp::kSum); },
      [&] { return comm.all_reduce_async(transposed, ReduceOp::kSum); });

  // reduce_scatter into an output of the wrong dtype (float64 for float32) and of the wrong size (8 of R * 6 + 1).
  const at::Tensor scatter_in = contribution(rank, {size, 6}, at::kFloat);
  at::Tensor wrong_dtype = at::full({6}, -3.0, at::kDouble);
  expect_same_error(
      "reduce_scatter, dtype", [&] { comm.reduce_scatter(scatter_in, wrong_dtype, ReduceOp::kSum); },
      [&] { return comm.reduce_scatter_async(scatter_in, wrong_dtype, ReduceOp::kSum); });
  const at::Tensor uneven_in = contribution(rank, {size * 6 + 1}, at::kBFloat16);
  at::Tensor uneven_out = at::full({8}, -3.0, at::kBFloat16);
  expect_same_error(
      "reduce_scatter, uneven", [&] { comm.reduce_scatter(uneven_in, uneven_out, ReduceOp::kMax); },
      [&] { return comm.reduce_scatter_async(uneven_in, uneven_out, ReduceOp::kMax); });

  // all_gather into an output of the wrong dtype (int64 for float32: twice the bytes) and of the wrong size.
  const at::Tensor gather_in = contribution(rank, {2, 7}, at::kFloat);
  at::Tensor gather_wrong_dtype = at::full({size * 2, 7}, -3, at::kLong);
  expect_same_error(
      "all_gather, dtype", [&] { comm.all_gather(gather_in, gather_wrong_dtype); },
      [&] { return comm.all_gather_async(gather_in, gather_wrong_dtype); });
  at::Tensor gather_long = at::full({size * 2 + 1, 7}, -3.0, at::kFloat);
  expect_same_error(
      "all_gather, size", [&] { comm.all_gather(gather_in, gather_long); },
      [&] { return comm.all_gather_async(gather_in, gather_long); });

  comm.barrier();
  EXPECT_TRUE(started.empty());
  EXPECT_TRUE(at::equal(storage, contribution(rank, {5, 3}, at::kFloat)));
  EXPECT_TRUE(at::equal(wrong_dtype, at::full({6}, -3.0, at::kDouble)));
  EXPECT_TRUE(at::equal(uneven_out, at::full({8}, -3.0, at::kBFloat16)));
  EXPECT_TRUE(at::equal(gather_wrong_dtype, at::full({size * 2, 7}, -3, at::kLong)));
  EXPECT_TRUE(at::equal(gather_long, at::full({size * 2 + 1, 7}, -3.0, at::kFloat)));

  at::Tensor after = contribution(rank, {4, 3}, at::kDouble);
  comm.all_reduce_async(after, ReduceOp::kSum)->wait();
  EXPECT_TRUE(at::equal(after, reduced(size, {4, 3}, at::kDouble, ReduceOp::kSum)));
}
