// Run by CTest under `mpiexec -n 2` and `-n 4`: the sharded randomized SVD against the serial one of the gathered
// matrix, its exact communication volume, the shared sketch, the fallback on an ill-conditioned sketch, and bad
// input on one rank as the same error on every rank.
#include "linalg/sharded_rsvd.h"

#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <vector>

#include "launch/error.h"
#include "launch/mpi_communicator.h"
#include "support/counting_communicator.h"
#include "tests/linalg/known_spectrum.h"

namespace {

using mlagpt::linalg::QrMethod;
using mlagpt::linalg::rsvd;
using mlagpt::linalg::RsvdOptions;
using mlagpt::linalg::RsvdResult;
using mlagpt::linalg::sharded_rsvd;
using mlagpt::linalg::Split;
using namespace mlagpt::testing;
using ::testing::HasSubstr;

constexpr int64_t kM = 283;  // neither 283 nor 197 divides evenly over 2 or 4 ranks
constexpr int64_t kN = 197;
constexpr int64_t kK = 24;
constexpr int64_t kP = 10;

class ShardedRsvdTest : public ::testing::Test {
 protected:
  mlagpt::launch::MpiCommunicator world{MPI_COMM_WORLD};
  CountingCommunicator comm{world};
  int rank = comm.rank();
  int size = comm.size();

  // Rank r's share of `extent` rows or columns: the first (extent % size) ranks hold one more.
  int64_t extent_of(int r, int64_t extent) const { return extent / size + (r < extent % size ? 1 : 0); }
  int64_t offset_of(int r, int64_t extent) const {
    int64_t offset = 0;
    for (int j = 0; j < r; ++j) {
      offset += extent_of(j, extent);
    }
    return offset;
  }
  at::Tensor block(const at::Tensor& a, Split split) const {
    const int dim = split == Split::kRows ? 0 : 1;
    return a.narrow(dim, offset_of(rank, a.size(dim)), extent_of(rank, a.size(dim))).contiguous();
  }
  // Every rank's copy of `t`, stacked: [size, numel].
  at::Tensor gather(const at::Tensor& t) {
    at::Tensor flat = t.contiguous().view({-1});
    at::Tensor out = at::empty({size, flat.numel()}, flat.options());
    world.all_gather(flat, out);
    return out;
  }
  void expect_same_on_every_rank(const at::Tensor& t, const char* what) {
    const at::Tensor all = gather(t);
    for (int r = 1; r < size; ++r) {
      EXPECT_TRUE(at::equal(all[r], all[0])) << what << " differs between rank 0 and rank " << r;
    }
  }
};

double relative(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).norm().item<double>() / b.to(at::kDouble).norm().item<double>();
}

const char* name(Split split) {
  return split == Split::kRows ? "rows" : "columns";
}

TEST_F(ShardedRsvdTest, RunsOnSeveralRanks) {
  EXPECT_GE(size, 2);
}

TEST_F(ShardedRsvdTest, EveryRankDrawsTheSameSketchWithoutCommunicating) {
  comm.reset();
  const at::Tensor omega = mlagpt::linalg::gaussian_sketch(kN, kK + kP, 12345, at::kFloat, at::kCPU);
  EXPECT_EQ(comm.calls(), 0);
  expect_same_on_every_rank(omega, "Omega");
}

TEST_F(ShardedRsvdTest, EqualsTheSerialRsvdOfTheGatheredMatrix) {
  // Singular values 0.9^i: well separated, so U and V themselves (not only their span) are compared.
  const KnownMatrix known = with_spectrum("geometric", kM, kN, geometric(kN, 0.9), 101);
  const at::Tensor a = known.a.to(at::kFloat);
  for (auto split : {Split::kRows, Split::kColumns}) {
    for (auto method : {QrMethod::kCholeskyQr2, QrMethod::kTsqr}) {
      for (int64_t q : {0, 2}) {
        SCOPED_TRACE(std::string(name(split)) + " " + mlagpt::linalg::to_string(method) + " q=" + std::to_string(q));
        const RsvdOptions options{kK, kP, q, 77, method};
        const RsvdResult serial = rsvd(a, options);
        const RsvdResult sharded = sharded_rsvd(block(a, split), split, comm, options);
        EXPECT_FALSE(sharded.exact);
        EXPECT_LT(relative(sharded.s, serial.s), 1e-5);
        const at::Tensor serial_u = split == Split::kRows ? block(serial.u.t(), Split::kColumns).t() : serial.u;
        const at::Tensor serial_v = split == Split::kColumns ? block(serial.v.t(), Split::kColumns).t() : serial.v;
        ASSERT_EQ(sharded.u.sizes(), serial_u.sizes());
        ASSERT_EQ(sharded.v.sizes(), serial_v.sizes());
        EXPECT_LT(relative(sharded.u, serial_u), 1e-5);
        EXPECT_LT(relative(sharded.v, serial_v), 1e-5);
        expect_same_on_every_rank(sharded.s, "S");
        expect_same_on_every_rank(split == Split::kRows ? sharded.v : sharded.u, "the replicated factor");
      }
    }
  }
}

TEST_F(ShardedRsvdTest, SendsExactlyTheAnalyticVolume) {
  // A flat-ish spectrum keeps every sketch well conditioned: no fallback, so c is exactly 2 or 1.
  const KnownMatrix known = with_spectrum("slow_decay", kM, kN, slow_decay(kN), 102);
  const int64_t l = kK + kP;
  const int64_t agreement = 10 * 8;  // bytes: 10 int64 per rank
  for (auto dtype : {at::kFloat, at::kDouble}) {
    const int64_t value = dtype == at::kFloat ? 4 : 8;
    for (auto split : {Split::kRows, Split::kColumns}) {
      for (auto method : {QrMethod::kCholeskyQr2, QrMethod::kTsqr}) {
        for (int64_t q : {0, 1, 3}) {
          SCOPED_TRACE(std::string(name(split)) + " " + mlagpt::linalg::to_string(method) + " q=" + std::to_string(q) +
                       " " + c10::toString(dtype));
          comm.reset();
          const RsvdResult r = sharded_rsvd(block(known.a.to(dtype), split), split, comm, {kK, kP, q, 5, method});
          EXPECT_EQ(r.qr.shifted_cholesky_qr3, 0);
          EXPECT_EQ(r.qr.householder, method == QrMethod::kTsqr ? 2 * (q + 1) : 0);
          const int64_t c = method == QrMethod::kCholeskyQr2 ? 2 : 1;
          const int64_t whole = split == Split::kRows ? kN : kM;  // (q+1) n l for rows, (q+1) m l for columns
          const int64_t values = (q + 1) * whole * l + c * (q + 1) * l * l;
          EXPECT_EQ(comm.bytes(), agreement + value * values);
        }
      }
    }
  }
}

TEST_F(ShardedRsvdTest, ExactCaseEqualsTheSerialExactSvdAndSendsItsVolume) {
  // k + p >= min(m, n), for each split with the split dimension the long and the short one.
  for (auto [m, n] : {std::pair<int64_t, int64_t>{kM, 29}, std::pair<int64_t, int64_t>{31, kN}}) {
    const KnownMatrix known = with_spectrum("geometric", m, n, geometric(std::min(m, n), 0.8), 103);
    const int64_t s = std::min(m, n);
    const int64_t k = s - 4;
    for (auto split : {Split::kRows, Split::kColumns}) {
      SCOPED_TRACE(std::to_string(m) + "x" + std::to_string(n) + " " + name(split));
      comm.reset();
      const RsvdResult sharded = sharded_rsvd(block(known.a, split), split, comm, {k, 6, 2, 9});
      const RsvdResult serial = rsvd(known.a, {k, 6, 2, 9});
      EXPECT_TRUE(sharded.exact);
      EXPECT_LT((sharded.s - known.sigma.narrow(0, 0, k)).abs().max().item<double>(), 1e-13);
      EXPECT_LT(relative(sharded.s, serial.s), 1e-13);
      const int64_t c = 2;
      int64_t values = 0;
      if (split == Split::kRows) {
        values = m > n ? c * s * s + n * s : n * s;
      } else {
        values = n > m ? c * s * s : m * s + c * s * s;
      }
      EXPECT_EQ(comm.bytes(), 80 + 8 * values);
    }
  }
}

TEST_F(ShardedRsvdTest, IllConditionedSketchTakesShiftedCholeskyQr3OnEveryRank) {
  const KnownMatrix known = with_spectrum("steep", kM, kN, geometric(kN, 0.73), 104);
  const RsvdResult r = sharded_rsvd(block(known.a.to(at::kFloat), Split::kRows), Split::kRows, comm, {kK, kP, 0, 5});
  EXPECT_GE(r.qr.shifted_cholesky_qr3, 1);
  // U's rows are spread over the ranks: its Gram matrix is the sum of every rank's.
  at::Tensor gram = at::mm(r.u.t().to(at::kDouble), r.u.to(at::kDouble));
  world.all_reduce(gram, mlagpt::launch::ReduceOp::kSum);
  const double loss = (gram - at::eye(kK, at::kDouble)).abs().max().item<double>();
  EXPECT_LT(loss, 20 * unit_roundoff(at::kFloat) * std::sqrt(static_cast<double>(kM)));
  expect_same_on_every_rank(at::full({1}, static_cast<double>(r.qr.shifted_cholesky_qr3), at::kDouble), "path");
}

std::string error_on_every_rank(const std::function<void()>& f) {
  try {
    f();
  } catch (const mlagpt::Error& e) {
    return e.what();
  }
  return "no error";
}

TEST_F(ShardedRsvdTest, BadInputOnOneRankIsTheSameErrorOnEveryRank) {
  const at::Tensor a = with_spectrum("flat", kM, kN, flat(kN), 105).a;
  const int bad = size - 1;
  at::Tensor nan = block(a, Split::kRows).clone();
  if (rank == bad) {
    nan[0][0] = std::numeric_limits<double>::quiet_NaN();
  }
  EXPECT_THAT(error_on_every_rank([&] { sharded_rsvd(nan, Split::kRows, comm, {kK}); }),
              HasSubstr("rank " + std::to_string(bad) + "'s block has NaN or Inf entries"));
  // Column blocks of different heights.
  const at::Tensor ragged = rank == bad ? block(a, Split::kColumns).narrow(0, 0, kM - 1) : block(a, Split::kColumns);
  EXPECT_THAT(error_on_every_rank([&] { sharded_rsvd(ragged.contiguous(), Split::kColumns, comm, {kK}); }),
              HasSubstr("must have the same number of rows: rank 0 has 283, rank " + std::to_string(bad) + " has 282"));
  const at::Tensor flat_block = rank == bad ? at::randn({kN}, at::kDouble) : block(a, Split::kRows);
  EXPECT_THAT(error_on_every_rank([&] { sharded_rsvd(flat_block, Split::kRows, comm, {kK}); }),
              HasSubstr("rank " + std::to_string(bad) + "'s block is not a 2-D matrix"));
  EXPECT_THAT(
      error_on_every_rank([&] { sharded_rsvd(block(a, Split::kRows), Split::kRows, comm, {rank == bad ? 3 : 4}); }),
      HasSubstr("the options differ between ranks"));
  EXPECT_THAT(error_on_every_rank([&] { sharded_rsvd(block(a, Split::kRows), Split::kRows, comm, {kN + 1}); }),
              HasSubstr("k = 198 must be between 1 and min(m, n) = 197"));
}

}  // namespace
