// The randomized SVD over a Communicator; rsvd() is this with a LocalCommunicator (one rank, split by rows).
#include "linalg/sharded_rsvd.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/all.h>
#include <ATen/ops/eye.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/linalg_svd.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "launch/communicator.h"
#include "launch/error.h"

namespace mlagpt::linalg {
namespace {

// What every rank tells every other before any work: enough to give the same error everywhere.
enum Field : int64_t {
  kIsMatrix,
  kRows,
  kCols,
  kFinite,
  kDtype,
  kK,
  kOversample,
  kPowerIters,
  kSeed,
  kMethod,
  kFields
};

struct Agreed {
  int64_t m = 0;
  int64_t n = 0;
  std::vector<int64_t> extents;  // rows (kRows) or columns (kColumns) of each rank's block
  int64_t offset = 0;            // of this rank's block along the split dimension
};

std::string who(const launch::Communicator& comm, int rank) {
  return comm.size() == 1 ? std::string("the matrix") : fmt::format("rank {}'s block", rank);
}

// A NaN or an infinity makes the sum non-finite, so a finite sum proves every entry finite, at a twentieth of the
// cost of isfinite().all() (which materializes a mask). Only a non-finite sum (a bad entry, or finite entries whose
// sum overflows) pays for the entry-by-entry check.
bool all_finite(const at::Tensor& t) {
  if (std::isfinite(t.sum().item<double>())) {
    return true;
  }
  return at::isfinite(t).all().item<bool>();
}

bool is_supported(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16 || dtype == at::kHalf;
}

// `computed` is the block in the dtype the work is done in (the finiteness check reads it).
Agreed agree(const at::Tensor& block, const at::Tensor& computed, Split split, launch::Communicator& comm,
             const RsvdOptions& options, const char* name) {
  if (!block.defined()) {
    throw Error(fmt::format("{}: the matrix is undefined", name));
  }
  const bool matrix = block.dim() == 2;
  const bool supported = is_supported(block.scalar_type());
  const bool finite = matrix && supported && all_finite(computed);
  int64_t seed_bits = 0;
  std::memcpy(&seed_bits, &options.seed, sizeof seed_bits);
  const std::array<int64_t, kFields> mine{matrix ? 1 : 0,
                                          matrix ? block.size(0) : -1,
                                          matrix ? block.size(1) : -1,
                                          finite ? 1 : 0,
                                          static_cast<int64_t>(block.scalar_type()),
                                          options.k,
                                          options.oversample,
                                          options.power_iters,
                                          seed_bits,
                                          static_cast<int64_t>(options.qr)};
  at::Tensor local = at::tensor(std::vector<int64_t>(mine.begin(), mine.end()), at::kLong).to(block.device());
  at::Tensor gathered = at::empty({comm.size() * kFields}, local.options());
  comm.all_gather(local, gathered);
  const at::Tensor all = gathered.cpu();
  const int64_t* v = all.data_ptr<int64_t>();
  const auto at_rank = [&](int r, Field f) { return v[static_cast<int64_t>(r) * kFields + f]; };

  for (int r = 0; r < comm.size(); ++r) {
    if (at_rank(r, kIsMatrix) == 0) {
      throw Error(fmt::format("{}: {} is not a 2-D matrix{}", name, who(comm, r),
                              r == comm.rank() ? fmt::format(" (sizes [{}])", fmt::join(block.sizes(), ", ")) : ""));
    }
    const auto dtype = static_cast<at::ScalarType>(at_rank(r, kDtype));
    if (!is_supported(dtype)) {
      throw Error(fmt::format("{}: {} is {}: float32, float64, bfloat16 or float16 expected", name, who(comm, r),
                              c10::toString(dtype)));
    }
    if (dtype != static_cast<at::ScalarType>(at_rank(0, kDtype))) {
      throw Error(fmt::format("{}: rank {}'s block is {} but rank 0's is {}", name, r, c10::toString(dtype),
                              c10::toString(static_cast<at::ScalarType>(at_rank(0, kDtype)))));
    }
    if (at_rank(r, kFinite) == 0) {
      throw Error(fmt::format("{}: {} has NaN or Inf entries", name, who(comm, r)));
    }
    for (Field f : {kK, kOversample, kPowerIters, kSeed, kMethod}) {
      if (at_rank(r, f) != at_rank(0, f)) {
        throw Error(fmt::format("{}: the options differ between ranks (rank {} and rank 0)", name, r));
      }
    }
  }
  Agreed agreed;
  const Field split_field = split == Split::kRows ? kRows : kCols;
  const Field whole_field = split == Split::kRows ? kCols : kRows;
  for (int r = 0; r < comm.size(); ++r) {
    if (at_rank(r, whole_field) != at_rank(0, whole_field)) {
      throw Error(fmt::format("{}: blocks split by {} must have the same number of {}: rank 0 has {}, rank {} has {}",
                              name, split == Split::kRows ? "rows" : "columns",
                              split == Split::kRows ? "columns" : "rows", at_rank(0, whole_field), r,
                              at_rank(r, whole_field)));
    }
    if (r < comm.rank()) {
      agreed.offset += at_rank(r, split_field);
    }
    agreed.extents.push_back(at_rank(r, split_field));
  }
  const int64_t total = std::accumulate(agreed.extents.begin(), agreed.extents.end(), int64_t{0});
  agreed.m = split == Split::kRows ? total : at_rank(0, kRows);
  agreed.n = split == Split::kRows ? at_rank(0, kCols) : total;
  const int64_t smallest = std::min(agreed.m, agreed.n);
  if (smallest == 0) {
    throw Error(fmt::format("{}: the matrix is {} x {}: nothing to decompose", name, agreed.m, agreed.n));
  }
  if (options.k <= 0 || options.k > smallest) {
    throw Error(fmt::format("{}: k = {} must be between 1 and min(m, n) = {} (the matrix is {} x {})", name, options.k,
                            smallest, agreed.m, agreed.n));
  }
  if (options.oversample < 0) {
    throw Error(fmt::format("{}: oversample = {} must be >= 0", name, options.oversample));
  }
  if (options.power_iters < 0) {
    throw Error(fmt::format("{}: power_iters = {} must be >= 0", name, options.power_iters));
  }
  return agreed;
}

void sum(at::Tensor& t, launch::Communicator& comm) {
  comm.all_reduce(t, launch::ReduceOp::kSum);
}

// B^T = Qb Rb and Rb^T = Us diag(S) Ws^T give U = Q Us, V = Qb Ws (first k of each).
RsvdResult finish(const at::Tensor& q, const QrFactors& bt, int64_t k) {
  auto [us, s, wh] = at::linalg_svd(bt.r.t(), /*full_matrices=*/false);
  RsvdResult result;
  result.u = at::mm(q, us.narrow(1, 0, k));
  result.s = s.narrow(0, 0, k).contiguous();
  result.v = at::mm(bt.q, wh.narrow(0, 0, k).t());
  return result;
}

}  // namespace

RsvdResult sharded_rsvd(const at::Tensor& local_block, Split split, launch::Communicator& comm,
                        const RsvdOptions& options) {
  const char* name = comm.size() == 1 ? "rsvd" : "sharded_rsvd";
  const at::ScalarType dtype = local_block.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const bool convertible = local_block.defined() && is_supported(local_block.scalar_type());
  const at::Tensor a = convertible ? local_block.to(dtype).contiguous() : local_block;
  const Agreed agreed = agree(local_block, a, split, comm, options, name);
  const int64_t m = agreed.m;
  const int64_t n = agreed.n;
  const bool exact = options.k + options.oversample >= std::min(m, n);
  const int64_t l = std::min(options.k + options.oversample, std::min(m, n));
  const QrMethod method = options.qr;
  const RowSplit local_rows;                         // a replicated matrix: every rank factors it alike
  const RowSplit split_rows{&comm, agreed.extents};  // this rank's rows (kRows: of Y; kColumns: of A^T Q)
  QrReport report;
  const auto qr = [&](const at::Tensor& x, const RowSplit& rows) { return tall_qr(x, method, rows, &report); };

  RsvdResult result;
  if (split == Split::kRows) {
    at::Tensor q;  // this rank's rows of the range basis [m_r, l]
    if (exact && m <= n) {
      q = at::eye(m, a.options()).narrow(0, agreed.offset, a.size(0));
    } else if (exact) {
      q = qr(a, split_rows).q;
    } else {
      const at::Tensor omega = gaussian_sketch(n, l, options.seed, dtype, a.device());
      q = qr(at::mm(a, omega), split_rows).q;
      for (int64_t i = 0; i < options.power_iters; ++i) {
        at::Tensor z = at::mm(a.t(), q);
        sum(z, comm);
        q = qr(at::mm(a, qr(z, local_rows).q), split_rows).q;
      }
    }
    at::Tensor bt = at::mm(a.t(), q);
    sum(bt, comm);
    result = finish(q, qr(bt, local_rows), options.k);
  } else {
    at::Tensor q;  // the whole range basis [m, l], on every rank
    if (exact && m <= n) {
      q = at::eye(m, a.options());
    } else {
      at::Tensor y;
      if (exact) {
        y = at::zeros({m, n}, a.options());
        y.narrow(1, agreed.offset, a.size(1)).copy_(a);
      } else {
        const at::Tensor omega = gaussian_sketch(n, l, options.seed, dtype, a.device());
        y = at::mm(a, omega.narrow(0, agreed.offset, a.size(1)));
      }
      sum(y, comm);
      q = qr(y, local_rows).q;
      for (int64_t i = 0; !exact && i < options.power_iters; ++i) {
        y = at::mm(a, qr(at::mm(a.t(), q), split_rows).q);
        sum(y, comm);
        q = qr(y, local_rows).q;
      }
    }
    result = finish(q, qr(at::mm(a.t(), q), split_rows), options.k);
  }
  result.exact = exact;
  result.sketch_width = l;
  result.power_iters = exact ? 0 : options.power_iters;
  result.qr = report;
  return result;
}

}  // namespace mlagpt::linalg
