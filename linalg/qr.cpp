#include "linalg/qr.h"

#include <ATen/ops/linalg_qr.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "launch/error.h"

namespace mlagpt::linalg {

QrFactors householder_qr(const at::Tensor& a, bool check_info) {
  if (a.dim() != 2 || a.size(0) < a.size(1)) {
    throw Error(
        fmt::format("householder_qr: expected a tall 2-D matrix (m >= n), got sizes [{}]", fmt::join(a.sizes(), ", ")));
  }
  if (a.scalar_type() != at::kFloat && a.scalar_type() != at::kDouble) {
    throw Error(fmt::format("householder_qr: float32 or float64 expected, got {}", c10::toString(a.scalar_type())));
  }
#ifdef MLAGPT_WITH_CUDA
  if (a.is_cuda()) {
    return cusolver_qr(a, check_info);
  }
#else
  (void)check_info;
#endif
  auto [q, r] = at::linalg_qr(a, "reduced");
  return {q, r};
}

bool has_cusolver() {
#ifdef MLAGPT_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace mlagpt::linalg
