// The fused CPU RMSNorm (model/rms_norm_cpu.h) against the composite form: output and both gradients, float32 and
// float64, on one and on two threads (where the weight gradient is summed from per-thread partials), for row counts
// below and above one task's grain and a width that is no multiple of a vector.
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>

#include "model/norm.h"
#include "model/rms_norm_cpu.h"
#include "support/model_fixtures.h"

using mlagpt::testing::relative_error;

namespace {

struct Result {
  at::Tensor y, dx, dw;
};

Result run(bool fused, const at::Tensor& x0, const at::Tensor& w0, const at::Tensor& g, double eps) {
  const at::Tensor x = x0.clone().requires_grad_(true);
  const at::Tensor w = w0.clone().requires_grad_(true);
  const at::Tensor y = fused ? mlagpt::model::rms_norm_cpu(x, w, eps) : mlagpt::model::rms_norm_reference(x, w, eps);
  y.backward(g);
  return {y.detach(), x.grad(), w.grad()};
}

}  // namespace

TEST(RmsNormCpu, MatchesTheCompositeFormWithGradients) {
  at::manual_seed(11);
  const int previous = at::get_num_threads();
  for (const int threads : {1, 2}) {
    at::set_num_threads(threads);
    for (const at::ScalarType dtype : {at::kFloat, at::kDouble}) {
      const double tolerance = dtype == at::kFloat ? 2e-6 : 1e-13;
      for (const std::vector<int64_t>& shape : {std::vector<int64_t>{3, 7, 21}, std::vector<int64_t>{5, 1013, 37}}) {
        const at::Tensor x = (at::randn(shape) * 3.0).to(dtype);
        const at::Tensor w = (1.0 + 0.3 * at::randn({shape.back()})).to(dtype);
        const at::Tensor g = at::randn(shape).to(dtype);
        ASSERT_TRUE(mlagpt::model::rms_norm_cpu_supports(x, w));
        const Result fused = run(true, x, w, g, 1e-3);
        const Result plain = run(false, x, w, g, 1e-3);
        EXPECT_LE(relative_error(fused.y, plain.y), tolerance) << dtype << " threads " << threads;
        EXPECT_LE(relative_error(fused.dx, plain.dx), tolerance) << dtype << " threads " << threads;
        EXPECT_LE(relative_error(fused.dw, plain.dw), tolerance * 10) << dtype << " threads " << threads;
      }
    }
  }
  at::set_num_threads(previous);
}

TEST(RmsNormCpu, TakesOnlyWhatItComputes) {
  const at::Tensor w = at::ones({8});
  EXPECT_FALSE(mlagpt::model::rms_norm_cpu_supports(at::randn({2, 8}).to(at::kBFloat16), w));
  EXPECT_FALSE(mlagpt::model::rms_norm_cpu_supports(at::randn({2, 8}).to(at::kDouble), w));  // weight float32
  EXPECT_FALSE(mlagpt::model::rms_norm_cpu_supports(at::randn({2, 9}), w));
  // The module normalizes a bfloat16 x in float32 and rounds the result back.
  mlagpt::model::RmsNorm norm(8, 1e-5);
  const at::Tensor x = at::randn({4, 8});
  EXPECT_LE(relative_error(norm.forward(x.to(at::kBFloat16)).to(at::kFloat), norm.forward(x)), 1e-2);
}
