#include "linalg/tall_qr.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/eye.h>
#include <ATen/ops/linalg_cholesky_ex.h>
#include <ATen/ops/linalg_eigvalsh.h>
#include <ATen/ops/linalg_solve_triangular.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>

#include "launch/communicator.h"
#include "launch/error.h"

namespace mlagpt::linalg {
namespace {

double unit_roundoff(at::ScalarType dtype) {
  return dtype == at::kDouble ? std::ldexp(1.0, -53) : std::ldexp(1.0, -24);
}

// G = X^T X over all rows of X.
at::Tensor gram(const at::Tensor& x, const RowSplit& split) {
  at::Tensor g = at::mm(x.t(), x);
  if (split.distributed()) {
    split.comm->all_reduce(g, launch::ReduceOp::kSum);
  }
  return g;
}

// X R^-1.
at::Tensor right_solve(const at::Tensor& x, const at::Tensor& r) {
  return at::linalg_solve_triangular(r, x, /*upper=*/true, /*left=*/false);
}

struct Factor {
  at::Tensor r;               // upper triangular, positive diagonal
  double diagonal_ratio = 0;  // max / min of the diagonal: a lower bound on cond(X)
};

// The upper Cholesky factor of g, or nothing when the factorization fails. One small host read (the decision).
std::optional<Factor> try_cholesky(const at::Tensor& g) {
  auto [r, info] = at::linalg_cholesky_ex(g, /*upper=*/true);
  const at::Tensor diagonal = r.diagonal();
  const at::Tensor summary =
      at::stack({info.to(at::kDouble), diagonal.min().to(at::kDouble), diagonal.max().to(at::kDouble)}).cpu();
  const double* values = summary.data_ptr<double>();
  if (values[0] != 0 || !(values[1] > 0) || !std::isfinite(values[2])) {
    return std::nullopt;
  }
  return Factor{r, values[2] / values[1]};
}

// Flips the signs of R's rows (and Q's columns) so that R's diagonal is non-negative.
QrFactors with_positive_diagonal(QrFactors f) {
  const at::Tensor signs = at::where(f.r.diagonal() < 0, -1.0, 1.0).to(f.r.scalar_type());
  return {(f.q * signs).contiguous(), (f.r * signs.unsqueeze(1)).contiguous()};
}

// CholeskyQR2, shifted CholeskyQR3 when the first factorization fails or shows an ill-conditioned X, nothing when
// a later factorization fails.
std::optional<QrFactors> cholesky_qr(const at::Tensor& x, const RowSplit& split, QrReport& report) {
  const double u = unit_roundoff(x.scalar_type());
  const at::Tensor g = gram(x, split);
  if (const auto first = try_cholesky(g); first && first->diagonal_ratio <= 0.25 / std::sqrt(u)) {
    const at::Tensor x1 = right_solve(x, first->r);
    const auto second = try_cholesky(gram(x1, split));
    if (!second) {
      return std::nullopt;
    }
    ++report.cholesky_qr2;
    return QrFactors{right_solve(x1, second->r), at::mm(second->r, first->r)};
  }
  // Shifted CholeskyQR3: G + s I is safely positive definite in floating point, and X R1^-1 is then conditioned
  // well enough for two plain passes.
  const int64_t m = split.global_rows(x.size(0));
  const int64_t l = x.size(1);
  if (!std::isfinite(g.sum().item<double>())) {
    return std::nullopt;  // the Gram matrix overflowed: Householder does not square the entries
  }
  double lambda_max = 0;
  try {
    lambda_max = at::linalg_eigvalsh(g).max().item<double>();
  } catch (const c10::Error&) {
    return std::nullopt;  // the symmetric eigensolver did not converge: the same on every rank (same G)
  }
  const double shift = 11.0 * static_cast<double>(m * l + l * (l + 1)) * u * lambda_max;
  if (!(shift > 0) || !std::isfinite(shift)) {
    return std::nullopt;  // a zero (or non-finite) matrix: Householder handles it
  }
  const auto first = try_cholesky(g + shift * at::eye(l, g.options()));
  if (!first) {
    return std::nullopt;
  }
  at::Tensor q = right_solve(x, first->r);
  at::Tensor r = first->r;
  for (int pass = 0; pass < 2; ++pass) {
    const auto next = try_cholesky(gram(q, split));
    if (!next) {
      return std::nullopt;
    }
    q = right_solve(q, next->r);
    r = at::mm(next->r, r);
  }
  ++report.shifted_cholesky_qr3;
  return QrFactors{q, r};
}

// TSQR of an already checked block (tsqr() checks; tall_qr's fallback has checked already).
QrFactors householder_tsqr(const at::Tensor& block, const RowSplit& split) {
  const int64_t l = block.size(1);
  if (!split.distributed()) {
    return with_positive_diagonal(householder_qr(block, /*check_info=*/false));
  }
  // This rank's factor, l x l: the R of its block, or the block itself (padded with zero rows) when it has fewer
  // than l rows, its Q then being the identity.
  const int64_t rows = block.size(0);
  QrFactors local;
  if (rows >= l) {
    local = householder_qr(block, /*check_info=*/false);
    local.r = local.r.contiguous();
  } else {
    local.r = at::zeros({l, l}, block.options());
    local.r.narrow(0, 0, rows).copy_(block);
  }
  const int ranks = split.comm->size();
  at::Tensor gathered = at::empty({ranks * l, l}, block.options());
  split.comm->all_gather(local.r, gathered);
  // Stack only the rows that carry data (a short block's padding is left out), so the stacked Q has no rows that
  // would be dropped.
  std::vector<at::Tensor> pieces;
  int64_t stacked_rows = 0;
  int64_t offset = 0;  // of this rank's rows in the stack
  for (int r = 0; r < ranks; ++r) {
    const int64_t used = std::min(split.rows_per_rank[static_cast<size_t>(r)], l);
    if (r == split.comm->rank()) {
      offset = stacked_rows;
    }
    pieces.push_back(gathered.narrow(0, r * l, used));
    stacked_rows += used;
  }
  const QrFactors stacked = householder_qr(at::cat(pieces), /*check_info=*/false);
  const at::Tensor mine = stacked.q.narrow(0, offset, std::min(rows, l));
  const at::Tensor q = rows >= l ? at::mm(local.q, mine) : mine.contiguous();
  return with_positive_diagonal({q, stacked.r});
}

void check_block(const at::Tensor& block, const RowSplit& split, const char* what) {
  if (block.dim() != 2) {
    throw Error(fmt::format("{}: expected a 2-D block of rows, got sizes [{}]", what, fmt::join(block.sizes(), ", ")));
  }
  if (block.scalar_type() != at::kFloat && block.scalar_type() != at::kDouble) {
    throw Error(fmt::format("{}: float32 or float64 expected, got {}", what, c10::toString(block.scalar_type())));
  }
  if (split.distributed()) {
    const auto ranks = static_cast<size_t>(split.comm->size());
    if (split.rows_per_rank.size() != ranks) {
      throw Error(
          fmt::format("{}: rows_per_rank has {} entries for {} ranks", what, split.rows_per_rank.size(), ranks));
    }
    const int64_t expected = split.rows_per_rank[static_cast<size_t>(split.comm->rank())];
    if (block.size(0) != expected) {
      throw Error(fmt::format("{}: rank {} holds {} rows, rows_per_rank says {}", what, split.comm->rank(),
                              block.size(0), expected));
    }
  }
  const int64_t m = split.global_rows(block.size(0));
  if (m < block.size(1)) {
    throw Error(fmt::format("{}: expected a tall matrix, got {} rows and {} columns", what, m, block.size(1)));
  }
}

}  // namespace

std::string to_string(QrMethod method) {
  return method == QrMethod::kCholeskyQr2 ? "cholesky_qr2" : "tsqr";
}

QrMethod parse_qr_method(const std::string& name) {
  if (name == "cholesky_qr2") {
    return QrMethod::kCholeskyQr2;
  }
  if (name == "tsqr") {
    return QrMethod::kTsqr;
  }
  throw Error(fmt::format("unknown QR method '{}': expected cholesky_qr2 or tsqr", name));
}

bool RowSplit::distributed() const {
  return comm != nullptr && comm->size() > 1;
}

int64_t RowSplit::global_rows(int64_t local_rows) const {
  if (!distributed()) {
    return local_rows;
  }
  return std::accumulate(rows_per_rank.begin(), rows_per_rank.end(), int64_t{0});
}

QrReport& QrReport::operator+=(const QrReport& other) {
  cholesky_qr2 += other.cholesky_qr2;
  shifted_cholesky_qr3 += other.shifted_cholesky_qr3;
  householder += other.householder;
  return *this;
}

QrFactors tsqr(const at::Tensor& block, const RowSplit& split) {
  check_block(block, split, "tsqr");
  return householder_tsqr(block, split);
}

QrFactors tall_qr(const at::Tensor& block, QrMethod method, const RowSplit& split, QrReport* report) {
  check_block(block, split, "tall_qr");
  QrReport local;
  QrReport& counts = report != nullptr ? *report : local;
  if (method == QrMethod::kCholeskyQr2) {
    if (auto factors = cholesky_qr(block, split, counts)) {
      return std::move(*factors);
    }
  }
  ++counts.householder;
  return householder_tsqr(block, split);
}

}  // namespace mlagpt::linalg
