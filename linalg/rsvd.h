// Randomized SVD (Halko, Martinsson and Tropp, 2011, algorithms 4.4 and 5.1): A (m x n) ~= U diag(S) V^T of rank k
// from a Gaussian sketch of width l = k + p and q power (subspace) iterations, re-orthonormalized after every
// product with A and with A^T. The math and its error bounds: docs/mla.md, "Randomized SVD".
//
//   Y = A Omega, Q = qr(Y)                                    Omega [n, l] ~ N(0, 1), drawn from options.seed
//   q times: Z = qr(A^T Q), Q = qr(A Z)
//   B^T = A^T Q = Qb Rb (QR), Rb^T = Us diag(S) Ws^T (SVD of an l x l matrix)
//   U = Q Us[:, :k], V = Qb Ws[:, :k]
//
// When k + p >= min(m, n) the result is an exact (deterministic) SVD instead, and says so: the sketch is replaced
// by the identity (Q = I when m <= n, Q = qr(A) otherwise), so no randomness and no power iterations are involved.
//
// CPU and CUDA tensors; float32 and float64 are computed in their own precision, bfloat16 and float16 in float32
// (the result is float32 then). The QRs are linalg/tall_qr.h (CholeskyQR2 with its fallbacks by default, or
// TSQR, which on one rank is a Householder QR); the l x l SVD is at::linalg_svd (LAPACK on CPU, cuSOLVER on CUDA). The
// same seed gives the same Omega on every device and every rank: it is drawn on the CPU and copied.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "linalg/tall_qr.h"

namespace mlagpt::linalg {

struct RsvdOptions {
  int64_t k = 0;            // rank of the result, 1 <= k <= min(m, n)
  int64_t oversample = 10;  // p >= 0: the sketch has l = k + p columns
  int64_t power_iters = 2;  // q >= 0
  uint64_t seed = 0;        // draws Omega
  QrMethod qr = QrMethod::kCholeskyQr2;
};

struct RsvdResult {
  at::Tensor u;              // [m, k] (sharded by rows: this rank's rows)
  at::Tensor s;              // [k], descending
  at::Tensor v;              // [n, k] (sharded by columns: this rank's rows of V, i.e. its columns of A)
  bool exact = false;        // k + p >= min(m, n): a deterministic exact SVD was computed
  int64_t sketch_width = 0;  // l = min(k + p, min(m, n))
  int64_t power_iters = 0;   // q as run (0 for an exact SVD)
  QrReport qr;               // which path each orthonormalization took

  // "randomized SVD, k = 64, sketch 74, 2 power iterations" or "exact SVD (k + p >= min(m, n)), k = ...".
  std::string describe() const;
};

// Throws mlagpt::Error naming the value for a non-2-D or non-floating tensor, NaN or Inf entries, k <= 0,
// k > min(m, n), a negative oversample or power_iters.
RsvdResult rsvd(const at::Tensor& a, const RsvdOptions& options);

// The Gaussian test matrix Omega [rows, cols] of `seed`: the same values on every device and rank. `dtype` is
// float32 or float64; the result is on `device`.
at::Tensor gaussian_sketch(int64_t rows, int64_t cols, uint64_t seed, at::ScalarType dtype, at::Device device);

}  // namespace mlagpt::linalg
