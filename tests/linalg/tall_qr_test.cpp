// The tall QRs: CholeskyQR2 on well-conditioned input, shifted CholeskyQR3 where plain CholeskyQR2 loses
// orthogonality, Householder where even that fails, TSQR; each with R upper triangular with a non-negative diagonal.
#include "linalg/tall_qr.h"

#include <ATen/ops/linalg_cholesky_ex.h>
#include <ATen/ops/linalg_solve_triangular.h>
#include <ATen/ops/logspace.h>
#include <ATen/ops/tril.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "launch/error.h"
#include "tests/linalg/known_spectrum.h"

namespace {

using mlagpt::linalg::QrFactors;
using mlagpt::linalg::QrMethod;
using mlagpt::linalg::QrReport;
using mlagpt::linalg::tall_qr;
using namespace mlagpt::testing;

constexpr int64_t kRows = 419;
constexpr int64_t kCols = 37;

// A [419, 37] float32 matrix with condition number `condition`.
at::Tensor with_condition(double condition, uint64_t seed) {
  const at::Tensor sigma = at::logspace(0.0, -std::log10(condition), kCols, 10.0, at::kDouble);
  return with_spectrum("conditioned", kRows, kCols, sigma, seed).a.to(at::kFloat);
}

void expect_factorization(const at::Tensor& x, const QrFactors& f) {
  const double u = unit_roundoff(x.scalar_type());
  EXPECT_LT(orthogonality_loss(f.q), 50 * u * std::sqrt(static_cast<double>(kRows)));
  const at::Tensor x64 = x.to(at::kDouble);
  EXPECT_LT(frobenius_norm(at::mm(f.q.to(at::kDouble), f.r.to(at::kDouble)) - x64) / frobenius_norm(x64), 100 * u);
  EXPECT_EQ(at::tril(f.r, -1).abs().max().item<double>(), 0.0);
  EXPECT_GE(f.r.diagonal().min().item<double>(), 0.0);
}

// Plain CholeskyQR2, written out, to show the matrix does break it.
double plain_cholesky_qr2_loss(const at::Tensor& x) {
  at::Tensor q = x;
  for (int pass = 0; pass < 2; ++pass) {
    const at::Tensor r = std::get<0>(at::linalg_cholesky_ex(at::mm(q.t(), q), /*upper=*/true));
    q = at::linalg_solve_triangular(r, q, /*upper=*/true, /*left=*/false);
  }
  return orthogonality_loss(q);
}

TEST(TallQr, WellConditionedInputTakesCholeskyQr2) {
  const at::Tensor x = with_condition(1e2, 1);
  QrReport report;
  expect_factorization(x, tall_qr(x, QrMethod::kCholeskyQr2, {}, &report));
  EXPECT_EQ(report.cholesky_qr2, 1);
  EXPECT_EQ(report.shifted_cholesky_qr3 + report.householder, 0);
}

TEST(TallQr, ConditionPast1e4TakesShiftedCholeskyQr3AndStaysOrthonormal) {
  // Shifted CholeskyQR3 holds up to cond(X) of about u^-1 / sqrt(11 m l) = 4e4 here (tall_qr.h). The routing
  // threshold is u^-1/2 / 4 = 1e3, so both conditions must take it.
  for (double condition : {1.5e4, 3e4}) {
    SCOPED_TRACE(condition);
    const at::Tensor x = with_condition(condition, 2);
    if (condition == 3e4) {
      // cond(X)^2 = 9e8 is 54 u^-1: the Gram matrix is not positive definite in float32, so plain CholeskyQR2 is
      // not orthonormal (large or NaN). At 1.5e4 (cond^2 = 13 u^-1) whether it breaks depends on the rounding of
      // the machine's BLAS (it broke on one CPU and not on another), so only the routing is asserted there.
      const double plain_loss = plain_cholesky_qr2_loss(x);
      EXPECT_FALSE(plain_loss < 1e-3) << plain_loss;
    }
    QrReport report;
    expect_factorization(x, tall_qr(x, QrMethod::kCholeskyQr2, {}, &report));
    EXPECT_EQ(report.shifted_cholesky_qr3, 1);
    EXPECT_EQ(report.cholesky_qr2 + report.householder, 0);
  }
}

TEST(TallQr, NumericallyRankDeficientInputFallsBackToHouseholder) {
  const at::Tensor x = with_condition(1e12, 3);
  QrReport report;
  expect_factorization(x, tall_qr(x, QrMethod::kCholeskyQr2, {}, &report));
  EXPECT_EQ(report.householder, 1);
}

TEST(TallQr, AllMethodsGiveTheSameFactorsOfAFullRankMatrix) {
  const at::Tensor x = with_condition(30, 4).to(at::kDouble);
  QrReport report;
  const QrFactors cholesky = tall_qr(x, QrMethod::kCholeskyQr2, {}, &report);
  const QrFactors householder = tall_qr(x, QrMethod::kTsqr, {}, &report);
  expect_factorization(x, householder);
  EXPECT_LT((cholesky.q - householder.q).abs().max().item<double>(), 1e-12);
  EXPECT_LT((cholesky.r - householder.r).abs().max().item<double>(), 1e-12);
  EXPECT_EQ(report.cholesky_qr2, 1);
  EXPECT_EQ(report.householder, 1);
}

TEST(TallQr, WideOrIntegerInputIsAnError) {
  EXPECT_THROW(tall_qr(at::randn({5, 8}), QrMethod::kCholeskyQr2), mlagpt::Error);
  EXPECT_THROW(tall_qr(at::ones({8, 5}, at::kInt), QrMethod::kTsqr), mlagpt::Error);
  EXPECT_THROW(mlagpt::linalg::parse_qr_method("lu"), mlagpt::Error);
  EXPECT_EQ(mlagpt::linalg::parse_qr_method("tsqr"), QrMethod::kTsqr);
}

}  // namespace
