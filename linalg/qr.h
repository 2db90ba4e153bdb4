// Householder QR of a tall matrix: A (m x n, m >= n) = Q R with Q (m x n) orthonormal columns and R (n x n) upper
// triangular (the reduced, "economic" factorization).
//
// CUDA tensors go to cuSOLVER (64-bit `cusolverDnXgeqrf`, then `orgqr` to form Q) on the current CUDA stream of the
// tensor's device; CPU tensors to LAPACK through ATen. float32 and float64. The randomized SVD uses this for its
// range finder and for the small QR of TSQR.
#pragma once

#include <ATen/core/Tensor.h>

namespace mlagpt::linalg {

struct QrFactors {
  at::Tensor q;  // [m, n]
  at::Tensor r;  // [n, n], upper triangular
};

// `check_info`: on CUDA, read cuSOLVER's info on the host (a synchronization) and throw if it reports an illegal
// argument. The size and dtype checks made before the call rule that out, so the randomized SVD's hot path passes
// false and never waits for the GPU here. LAPACK (CPU) always checks.
QrFactors householder_qr(const at::Tensor& a, bool check_info = true);

// True when this build has cuSOLVER (MLAGPT_WITH_CUDA).
bool has_cusolver();

#ifdef MLAGPT_WITH_CUDA
// The cuSOLVER path itself, for tests that compare it with LAPACK. `a` must be a CUDA tensor.
QrFactors cusolver_qr(const at::Tensor& a, bool check_info = true);
#endif

}  // namespace mlagpt::linalg
