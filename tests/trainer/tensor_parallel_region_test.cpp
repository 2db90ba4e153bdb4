// Megatron's two tensor-parallel regions (model/tensor_parallel.h) over MPI, under mpiexec -n 2 and -n 4: "reduce
// from" sums forward and passes the gradient back as is; "copy to" passes forward as is and sums the gradient; and
// together they make a column-parallel layer followed by a row-parallel one compute what the whole layers compute,
// forward and backward, in float64 against the full computation on every rank. The group of one is the identity.
#include <ATen/TensorOperators.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>

#include "launch/mpi_communicator.h"
#include "model/tensor_parallel.h"
#include "trainer/parallel/tensor_parallel_group.h"

namespace {

using mlagpt::model::copy_to_tensor_parallel_region;
using mlagpt::model::reduce_from_tensor_parallel_region;

class TensorParallelRegion : public testing::Test {
 protected:
  mlagpt::launch::MpiCommunicator comm{MPI_COMM_WORLD};
  mlagpt::trainer::TensorParallelGroup group{comm};
  int64_t rank = group.rank();
  int64_t ranks = group.size();
  at::TensorOptions f64 = at::TensorOptions().dtype(at::kDouble);
};

TEST_F(TensorParallelRegion, ReduceFromSumsForwardAndPassesTheGradientAsIs) {
  const at::Tensor x = (at::arange(6, f64) * static_cast<double>(rank + 1)).reshape({2, 3}).requires_grad_(true);
  const at::Tensor y = reduce_from_tensor_parallel_region(x, group);
  const double factor = static_cast<double>(ranks * (ranks + 1) / 2);  // 1 + 2 + ... + R
  EXPECT_TRUE(at::allclose(y, at::arange(6, f64).reshape({2, 3}) * factor, 0, 0));
  const at::Tensor upstream = at::ones({2, 3}, f64) * static_cast<double>(rank + 3);
  y.backward(upstream);
  EXPECT_TRUE(at::equal(x.grad(), upstream)) << "rank " << rank;
}

TEST_F(TensorParallelRegion, CopyToPassesForwardAsIsAndSumsTheGradient) {
  const at::Tensor x = (at::arange(6, f64) + 1).reshape({3, 2}).requires_grad_(true);
  const at::Tensor y = copy_to_tensor_parallel_region(x, group);
  EXPECT_TRUE(at::equal(y, x));
  (y * static_cast<double>(rank + 1)).sum().backward();
  const double factor = static_cast<double>(ranks * (ranks + 1) / 2);
  EXPECT_TRUE(at::equal(x.grad(), at::ones({3, 2}, f64) * factor)) << "rank " << rank;
}

TEST_F(TensorParallelRegion, AColumnThenRowParallelMlpEqualsTheWholeOne) {
  // in 5, hidden 12 (split over 2 or 4 ranks), out 7, batch 3: no two sizes alike.
  constexpr int64_t kIn = 5, kHidden = 12, kOut = 7, kBatch = 3;
  ASSERT_EQ(kHidden % ranks, 0);
  at::manual_seed(11);  // the same full tensors on every rank
  const at::Tensor w1 = at::randn({kHidden, kIn}, f64);
  const at::Tensor w2 = at::randn({kOut, kHidden}, f64);
  const at::Tensor x0 = at::randn({kBatch, kIn}, f64);
  const at::Tensor weights = at::randn({kBatch, kOut}, f64);  // the loss is sum(y * weights)

  const at::Tensor x_full = x0.clone().requires_grad_(true);
  const at::Tensor w1_full = w1.clone().requires_grad_(true);
  const at::Tensor w2_full = w2.clone().requires_grad_(true);
  const at::Tensor y_full = at::linear(at::gelu(at::linear(x_full, w1_full)), w2_full);
  (y_full * weights).sum().backward();

  const int64_t h = kHidden / ranks;
  const at::Tensor x = x0.clone().requires_grad_(true);
  const at::Tensor w1_part = w1.narrow(0, rank * h, h).clone().requires_grad_(true);  // column-parallel: rows
  const at::Tensor w2_part = w2.narrow(1, rank * h, h).clone().requires_grad_(true);  // row-parallel: columns
  const at::Tensor partial =
      at::linear(at::gelu(at::linear(copy_to_tensor_parallel_region(x, group), w1_part)), w2_part);
  const at::Tensor y = reduce_from_tensor_parallel_region(partial, group);
  (y * weights).sum().backward();

  EXPECT_TRUE(at::allclose(y, y_full, 1e-12, 1e-12));
  EXPECT_TRUE(at::allclose(x.grad(), x_full.grad(), 1e-12, 1e-12)) << "the input's gradient is the sum of the parts'";
  EXPECT_TRUE(at::allclose(w1_part.grad(), w1_full.grad().narrow(0, rank * h, h), 1e-12, 1e-12));
  EXPECT_TRUE(at::allclose(w2_part.grad(), w2_full.grad().narrow(1, rank * h, h), 1e-12, 1e-12));
}

TEST_F(TensorParallelRegion, TheGroupOfOneIsTheIdentity) {
  const auto& one = mlagpt::model::single_device();
  EXPECT_EQ(one.rank(), 0);
  EXPECT_EQ(one.size(), 1);
  const at::Tensor x = at::arange(4, f64).requires_grad_(true);
  const at::Tensor y = reduce_from_tensor_parallel_region(copy_to_tensor_parallel_region(x, one), one);
  EXPECT_TRUE(at::equal(y, x));
  (y * 3.0).sum().backward();
  EXPECT_TRUE(at::equal(x.grad(), at::ones({4}, f64) * 3.0));
}

}  // namespace
