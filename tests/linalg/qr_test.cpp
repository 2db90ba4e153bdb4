// Householder QR: Q has orthonormal columns, R is upper triangular, QR reproduces A. The cuSOLVER path (gpu label)
// is also checked against LAPACK's R up to the signs of its rows.
#include "linalg/qr.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/eye.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tril.h>
#include <gtest/gtest.h>

#include "launch/backend_versions.h"
#include "launch/error.h"
#include "support/prerequisites.h"

namespace {

void expect_valid_qr(const at::Tensor& a, const mlagpt::linalg::QrFactors& f, double tol) {
  const int64_t n = a.size(1);
  const at::Tensor q = f.q.cpu().to(at::kDouble);
  const at::Tensor r = f.r.cpu().to(at::kDouble);
  ASSERT_EQ(q.sizes(), a.sizes());
  ASSERT_EQ(r.sizes(), (std::vector<int64_t>{n, n}));
  const double orthogonality = (q.t().mm(q) - at::eye(n, at::kDouble)).abs().max().item<double>();
  const double residual = ((q.mm(r) - a.cpu().to(at::kDouble)).norm() / a.cpu().to(at::kDouble).norm()).item<double>();
  const double below_diagonal = at::tril(r, -1).abs().max().item<double>();
  EXPECT_LT(orthogonality, tol);
  EXPECT_LT(residual, tol);
  EXPECT_EQ(below_diagonal, 0.0);
}

}  // namespace

TEST(HouseholderQr, LapackFactorsTallMatrix) {
  at::manual_seed(1);
  for (auto dtype : {at::kFloat, at::kDouble}) {
    const at::Tensor a = at::randn({200, 24}, at::TensorOptions().dtype(dtype));
    const double tol = dtype == at::kFloat ? 1e-5 : 1e-13;
    expect_valid_qr(a, mlagpt::linalg::householder_qr(a), tol);
  }
}

TEST(HouseholderQr, RejectsWideAndIntegerMatrices) {
  EXPECT_THROW(mlagpt::linalg::householder_qr(at::randn({3, 5})), mlagpt::Error);
  EXPECT_THROW(mlagpt::linalg::householder_qr(at::randn({5}).view({5, 1}).to(at::kInt)), mlagpt::Error);
}

TEST(HouseholderQr, CusolverMatchesLapack) {
  MLAGPT_REQUIRE_GPU(mlagpt::linalg::has_cusolver(), "this build has no CUDA (MLAGPT_WITH_CUDA=OFF): no cuSOLVER");
  MLAGPT_REQUIRE_GPU(mlagpt::launch::cuda_device_count() > 0, "no CUDA device: the cuSOLVER QR test needs one");
  at::manual_seed(2);
  for (auto dtype : {at::kFloat, at::kDouble}) {
    const at::Tensor a = at::randn({300, 40}, at::TensorOptions().dtype(dtype));
    const auto gpu = mlagpt::linalg::householder_qr(a.cuda());
    ASSERT_TRUE(gpu.q.is_cuda());
    const double tol = dtype == at::kFloat ? 1e-5 : 1e-13;
    expect_valid_qr(a, gpu, tol);
    // R is unique up to the sign of each row.
    const auto cpu = mlagpt::linalg::householder_qr(a);
    const double diff = (gpu.r.cpu().abs() - cpu.r.abs()).abs().max().item<double>();
    EXPECT_LT(diff, dtype == at::kFloat ? 1e-3 : 1e-10);
  }
}
