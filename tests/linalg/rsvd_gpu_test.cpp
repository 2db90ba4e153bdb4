// gpu label: the randomized SVD of a CUDA tensor (cuSOLVER QRs, the l x l SVD on cuSOLVER through ATen) equals
// the CPU one of the same matrix and seed: the sketch is drawn on the CPU and copied, so both see the same Omega.
#include <gtest/gtest.h>

#include "launch/backend_versions.h"
#include "linalg/rsvd.h"
#include "support/prerequisites.h"
#include "tests/linalg/known_spectrum.h"

namespace {

using mlagpt::linalg::QrMethod;
using mlagpt::linalg::rsvd;
using mlagpt::linalg::RsvdResult;
using namespace mlagpt::testing;

double relative(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor a64 = a.cpu().to(at::kDouble);
  const at::Tensor b64 = b.cpu().to(at::kDouble);
  return (a64 - b64).norm().item<double>() / b64.norm().item<double>();
}

TEST(RsvdGpu, CudaMatchesCpu) {
  MLAGPT_REQUIRE_GPU(mlagpt::linalg::has_cusolver(), "this build has no CUDA (MLAGPT_WITH_CUDA=OFF)");
  MLAGPT_REQUIRE_GPU(mlagpt::launch::cuda_device_count() > 0, "no CUDA device: the CUDA rsvd test needs one");
  const KnownMatrix known = with_spectrum("geometric", 611, 397, geometric(397, 0.9), 201);
  for (auto dtype : {at::kFloat, at::kDouble}) {
    for (auto method : {QrMethod::kCholeskyQr2, QrMethod::kTsqr}) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " " + mlagpt::linalg::to_string(method));
      const at::Tensor a = known.a.to(dtype);
      const RsvdResult cpu = rsvd(a, {32, 10, 2, 3, method});
      const RsvdResult gpu = rsvd(a.cuda(), {32, 10, 2, 3, method});
      ASSERT_TRUE(gpu.u.is_cuda());
      ASSERT_TRUE(gpu.s.is_cuda());
      const double tol = dtype == at::kFloat ? 1e-5 : 1e-12;
      EXPECT_LT(relative(gpu.s, cpu.s), tol);
      EXPECT_LT(relative(gpu.u, cpu.u), 100 * tol);
      EXPECT_LT(relative(gpu.v, cpu.v), 100 * tol);
      EXPECT_LT(orthogonality_loss(gpu.u), 20 * unit_roundoff(dtype) * std::sqrt(611.0));
    }
  }
}

}  // namespace
