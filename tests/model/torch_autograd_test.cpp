// LibTorch links and works: autograd of f(x) = sum(sin(x) * x^2) gives the analytic gradient cos(x) x^2 + 2 x sin(x).
#include <ATen/TensorOperators.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/linspace.h>
#include <ATen/ops/sin.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

TEST(TorchAutograd, GradientMatchesAnalyticDerivative) {
  at::Tensor x = at::linspace(-2.0, 3.0, 17, at::kDouble).set_requires_grad(true);
  at::Tensor y = (at::sin(x) * x * x).sum();
  y.backward();
  at::Tensor expected = at::cos(x.detach()) * x.detach() * x.detach() + 2 * x.detach() * at::sin(x.detach());
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(at::allclose(x.grad(), expected, 1e-12, 1e-12));
}
