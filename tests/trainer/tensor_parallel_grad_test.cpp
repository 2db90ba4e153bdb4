// GradReducer over a dp x tp mesh (tp = 2) under mpiexec -n 2 and -n 4: the gradients of replicated parameters with
// sum_over_tensor_parallel are summed over the tensor-parallel group before their data-parallel bucket is reduced,
// in one order on every rank although autograd delivers them in different orders on the two tensor-parallel ranks;
// split parameters and the other replicas are reduced over the data-parallel group only; with and without ZeRO-1,
// with and without overlap. A summed gradient one rank does not get is still summed (no hang) and reported missing
// on that rank. The gradients are small integers, so every sum is exact and compared bit for bit.
#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "launch/process_mesh.h"
#include "support/test_runtime.h"
#include "trainer/parallel/flat_adamw.h"
#include "trainer/parallel/grad_reducer.h"
#include "trainer/parallel/tensor_parallel_group.h"

namespace {

using mlagpt::trainer::FlatAdamW;
using mlagpt::trainer::FlatOptions;
using mlagpt::trainer::GradReducer;
using mlagpt::trainer::NamedParameter;

struct ParameterSpec {
  std::string name;
  std::vector<int64_t> shape;
  bool split = false;
  bool sum_over_tensor_parallel = false;
};

// Registration order. shared_a and shared_b have one shape, so that summing one rank's a with the other's b would
// go unnoticed by MPI and show in the values.
const std::vector<ParameterSpec>& specs() {
  static const std::vector<ParameterSpec> list = {{"split.weight", {5, 6}, true, false},
                                                  {"shared_a", {7}, false, true},
                                                  {"whole", {3, 4}, false, false},
                                                  {"shared_b", {7}, false, true},
                                                  {"shared_c", {9}, false, true}};
  return list;
}

class TensorParallelGrad : public testing::Test {
 protected:
  TensorParallelGrad()
      : mesh(mlagpt::testing::runtime(), mlagpt::launch::MeshOptions{.tp = 2}),
        group(mesh.tp()),
        dp(mesh.dp_rank()),
        tp(mesh.tp_rank()) {}

  // The gradient rank (d, t) contributes to parameter `p`: small integers, distinct per rank and parameter. A
  // replica without sum_over_tensor_parallel gets the whole gradient on every tensor-parallel rank, so it does not
  // depend on t.
  at::Tensor contribution(size_t p, int d, int t) const {
    const ParameterSpec& spec = specs()[p];
    const int rank_term = spec.split || spec.sum_over_tensor_parallel ? 10 * (d * 2 + t) : 10 * d;
    return (at::arange(numel(spec), at::kFloat) + static_cast<double>(rank_term + 100 * static_cast<int>(p)))
        .reshape(spec.shape);
  }

  // What every rank must hold after finish(): the contributions summed over the data-parallel ranks, and over the
  // tensor-parallel ranks too for sum_over_tensor_parallel (those `absent` on rank t = 1 contribute nothing there).
  at::Tensor expected(size_t p, bool absent_on_tp1) const {
    at::Tensor sum = at::zeros(specs()[p].shape, at::kFloat);
    for (int d = 0; d < mesh.dp_size(); ++d) {
      if (!specs()[p].sum_over_tensor_parallel) {
        sum += contribution(p, d, tp);
        continue;
      }
      for (int t = 0; t < 2; ++t) {
        if (!(absent_on_tp1 && t == 1)) {
          sum += contribution(p, d, t);
        }
      }
    }
    return sum;
  }

  static int64_t numel(const ParameterSpec& spec) {
    int64_t n = 1;
    for (const int64_t s : spec.shape) {
      n *= s;
    }
    return n;
  }

  std::vector<NamedParameter> parameters() const {
    std::vector<NamedParameter> out;
    for (const ParameterSpec& spec : specs()) {
      NamedParameter p{spec.name, at::zeros(spec.shape, at::kFloat).requires_grad_(true), true};
      p.sum_over_tensor_parallel = spec.sum_over_tensor_parallel;
      p.in_grad_norm = spec.split || tp == 0;
      out.push_back(std::move(p));
    }
    return out;
  }

  // One armed backward of sum(p * contribution) over `used` parameters, the terms made in the order given (autograd
  // runs the last made first); returns the names in the order their gradients reached autograd's accumulation.
  std::vector<std::string> backward(std::vector<NamedParameter>& ps, const std::vector<size_t>& used,
                                    GradReducer& reducer) const {
    auto order = std::make_shared<std::vector<std::string>>();
    at::Tensor loss = at::zeros({}, at::kFloat);
    for (const size_t p : used) {
      ps[p].tensor.register_hook([order, name = ps[p].name](const at::Tensor& grad) {
        order->push_back(name);
        return grad;
      });
      loss = loss + (ps[p].tensor * contribution(p, dp, tp)).sum();
    }
    reducer.arm();
    loss.backward();
    return *order;
  }

  // The gradients this rank's optimizer steps with: the whole buffer, or its ZeRO-1 shard of every bucket.
  void expect_reduced(FlatAdamW& optimizer, const std::vector<NamedParameter>& ps, bool c_absent_on_tp1) const {
    const auto& layout = optimizer.layout();
    std::vector<at::Tensor> buckets;
    for (size_t b = 0; b < layout.buckets.size(); ++b) {
      buckets.push_back(at::zeros({layout.buckets[b].numel}, at::kFloat));
    }
    for (size_t p = 0; p < ps.size(); ++p) {
      const auto& flat = layout.params[p];
      const auto& bucket = layout.buckets[static_cast<size_t>(flat.bucket)];
      const at::Tensor want = expected(p, c_absent_on_tp1 && ps[p].name == "shared_c");
      buckets[static_cast<size_t>(flat.bucket)]
          .narrow(0, flat.offset - bucket.offset, flat.numel)
          .copy_(want.reshape(-1));
      if (!optimizer.zero()) {
        EXPECT_TRUE(at::equal(ps[p].tensor.grad(), want)) << ps[p].name << " on dp " << dp << " tp " << tp;
      }
    }
    if (optimizer.zero()) {
      for (size_t b = 0; b < layout.buckets.size(); ++b) {
        const int bucket = static_cast<int>(b);
        const int64_t n = layout.shard_numel(bucket);
        EXPECT_TRUE(at::equal(optimizer.shard_grads(bucket), buckets[b].narrow(0, mesh.dp_rank() * n, n)))
            << "shard of bucket " << b << " on dp " << dp << " tp " << tp;
      }
    }
  }

  mlagpt::launch::ProcessMesh mesh;
  mlagpt::trainer::TensorParallelGroup group;
  int dp;
  int tp;
};

TEST_F(TensorParallelGrad, SumsSharedGradientsOverTheGroupInOneOrderThenOverDataParallelRanks) {
  ASSERT_EQ(mesh.tp_size(), 2) << "run under mpiexec with an even number of ranks";
  for (const bool zero : {false, true}) {
    for (const bool overlap : {true, false}) {
      SCOPED_TRACE(testing::Message() << "zero " << zero << ", overlap " << overlap);
      std::vector<NamedParameter> ps = parameters();
      // Small buckets: a few parameters each, so buckets start during backward.
      FlatAdamW optimizer(ps, mlagpt::trainer::AdamWSettings{}, FlatOptions{.bucket_bytes = 256, .zero = zero},
                          mesh.dp());
      GradReducer reducer(optimizer, overlap, group);
      optimizer.zero_grad();
      // Tensor-parallel rank 0 makes a's term before b's, rank 1 the other way round.
      const std::vector<size_t> used =
          tp == 0 ? std::vector<size_t>{0, 1, 2, 3, 4} : std::vector<size_t>{4, 3, 2, 1, 0};
      const std::vector<std::string> order = backward(ps, used, reducer);
      const auto position = [&order](const std::string& name) {
        return std::find(order.begin(), order.end(), name) - order.begin();
      };
      ASSERT_EQ(order.size(), used.size());
      EXPECT_EQ(position("shared_b") < position("shared_a"), tp == 0) << "the ranks' orders must differ";
      EXPECT_TRUE(reducer.finish().empty());
      expect_reduced(optimizer, ps, /*c_absent_on_tp1=*/false);
    }
  }
}

TEST_F(TensorParallelGrad, AMissingSharedGradientIsStillSummedAndReportedWhereItIsMissing) {
  ASSERT_EQ(mesh.tp_size(), 2) << "run under mpiexec with an even number of ranks";
  for (const bool zero : {false, true}) {
    SCOPED_TRACE(testing::Message() << "zero " << zero);
    std::vector<NamedParameter> ps = parameters();
    FlatAdamW optimizer(ps, mlagpt::trainer::AdamWSettings{}, FlatOptions{.bucket_bytes = 256, .zero = zero},
                        mesh.dp());
    GradReducer reducer(optimizer, /*overlap=*/true, group);
    optimizer.zero_grad();
    // shared_c (registered last, so its sum comes first) gets no gradient on tensor-parallel rank 1.
    const std::vector<size_t> used = tp == 0 ? std::vector<size_t>{0, 1, 2, 3, 4} : std::vector<size_t>{0, 1, 2, 3};
    backward(ps, used, reducer);
    const std::vector<std::string> missing = reducer.finish();
    EXPECT_EQ(missing, tp == 0 ? std::vector<std::string>{} : std::vector<std::string>{"shared_c"});
    expect_reduced(optimizer, ps, /*c_absent_on_tp1=*/true);
  }
}

}  // namespace
