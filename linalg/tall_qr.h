// QR of a tall matrix whose rows may be split over the ranks of a Communicator: X (m x l, m >= l) = Q R with Q
// orthonormal columns (each rank holds its rows of Q) and R upper triangular with a non-negative diagonal, the
// same R on every rank. With a non-negative diagonal the factorization of a full-rank X is unique, so every method
// below (and any split of the rows) computes the same Q and R up to round-off.
//
// Methods:
// - CholeskyQR2: G = X^T X (one all-reduce of l x l values), R1 = chol(G), X1 = X R1^-1, and the same once more on
//   X1. Two GEMMs and two triangular solves: the fastest, orthogonal to round-off when cond(X) is below about
//   u^-1/2 (u the unit round-off: 4e3 in float32, 1e8 in float64). When the first Cholesky factorization fails or
//   its diagonal shows cond(X) past u^-1/2 / 4, it falls back automatically to shifted CholeskyQR3 (Fukaya,
//   Kannan, Nakatsukasa, Zhang and Yamamoto, 2020): the first pass factors G + s I with
//   s = 11 (m l + l (l + 1)) u lambda_max(G), reusing the Gram matrix it already has, and two plain passes follow.
//   That holds up to cond(X) of about u^-1 / sqrt(11 m l). If a later factorization fails too (the input is
//   numerically rank-deficient), it falls back to TSQR on the original X.
// - TSQR: a Householder QR of each rank's block, one all-gather of the l x l R factors, a Householder QR of the
//   stacked factors (on every rank, identically), and the rank's rows of the stacked Q applied back. Unconditionally
//   stable, rank-deficient input included. With the rows in one place it is one Householder QR (linalg/qr.h).
//
// Communication, in values of X's dtype sent by each rank (all-reduce or all-gather input):
//   CholeskyQR2 2 l^2; TSQR l^2. Falling back from CholeskyQR2 to shifted CholeskyQR3 costs 3 l^2 in all (the
//   first Gram matrix is reused for the shifted pass, two plain passes follow); falling back further to TSQR adds
//   l^2 to what was sent before the failure.
// Every rank takes the same path: the decisions are made on all-reduced (bitwise identical) matrices.
//
// On CUDA tensors the Householder QRs run on cuSOLVER without reading its info on the host; a CholeskyQR pass
// reads one small tensor (the factorization's info and diagonal extremes) to decide on the fallback.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "linalg/qr.h"

namespace mlagpt::launch {
class Communicator;
}

namespace mlagpt::linalg {

enum class QrMethod { kCholeskyQr2, kTsqr };

// "cholesky_qr2" / "tsqr"; parse_qr_method throws mlagpt::Error naming the value otherwise.
std::string to_string(QrMethod method);
QrMethod parse_qr_method(const std::string& name);

// Where the rows of the tall matrix are. Without a communicator they are all here. With one, rank r holds
// rows_per_rank[r] consecutive rows (in rank order); every rank passes the same vector.
struct RowSplit {
  launch::Communicator* comm = nullptr;
  std::vector<int64_t> rows_per_rank;

  bool distributed() const;
  int64_t global_rows(int64_t local_rows) const;
};

// How many factorizations took each path, for tests and benchmarks that check which one ran.
struct QrReport {
  int64_t cholesky_qr2 = 0;
  int64_t shifted_cholesky_qr3 = 0;
  int64_t householder = 0;  // TSQR asked for, or the fallback after shifted CholeskyQR3 failed

  QrReport& operator+=(const QrReport& other);
};

// `block` is this rank's rows of X ([m_r, l], float32 or float64, CPU or CUDA). Returns this rank's rows of Q and
// the whole R. The global row count must be at least l.
QrFactors tall_qr(const at::Tensor& block, QrMethod method, const RowSplit& split = {}, QrReport* report = nullptr);

// TSQR (Householder) on its own; the fallback of tall_qr.
QrFactors tsqr(const at::Tensor& block, const RowSplit& split = {});

}  // namespace mlagpt::linalg
