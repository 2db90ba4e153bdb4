// The randomized SVD of linalg/rsvd.h for a matrix split over the ranks of a Communicator by rows or by columns,
// the two ways tensor parallelism splits a weight; no rank ever holds more of A than its block.
// Every rank draws the same Omega from options.seed without communicating, and gets the same S, its rows of U
// (split by rows; V whole) or its rows of V (split by columns; U whole). With the same seed the result equals rsvd()
// of the gathered matrix up to round-off.
//
// Split::kRows: rank r holds rows [o_r, o_r + m_r) of A, all n columns (an output-dimension split: a
//   column-parallel linear's weight [out, in] split over out).
// Split::kColumns: rank r holds columns [o_r, o_r + n_r), all m rows (an input-dimension split: a row-parallel
//   linear's weight split over in).
// Blocks may differ in size; blocks are in rank order.
//
// Communication, exactly, in values sent by each rank (the input of each all-reduce or all-gather; l = k + p,
// c = 2 for CholeskyQR2 and 1 for TSQR, each orthonormalization that falls back adding what tall_qr.h lists):
//   agreement   10 int64 (all-gather of every rank's block shape, finiteness and dtype and of the options: bad
//               input on any rank is the same error on every rank, never a hang)
//   kRows       (q + 1) n l + c (q + 1) l^2
//               = q+1 all-reduces of A^T Q [n, l] (q for the power iterations, 1 for B^T) and q+1 sharded QRs of
//                 Y = A Z [m, l]; the QRs of Z and B^T [n, l] are replicated, computed by every rank alike.
//   kColumns    (q + 1) m l + c (q + 1) l^2
//               = q+1 all-reduces of Y = A Omega or A Z [m, l] and q+1 sharded QRs of A^T Q [n, l] (q in the
//                 power iterations, 1 for B^T); the QRs of Y are replicated.
//   exact case (k + p >= min(m, n)), with s = min(m, n):
//     kRows, m > n: c s^2 + n s (sharded QR of A, then A^T Q);  kRows, m <= n: n s (A^T, gathered by all-reduce)
//     kColumns, n > m: c s^2 (sharded QR of A^T);  kColumns, n <= m: m s + c s^2 (A gathered by all-reduce,
//     then the sharded QR of A^T Q)
// The gathered cases are those where the split dimension is at most k + p: the whole matrix is then no larger
// than the sketch the randomized algorithm would have reduced.
#pragma once

#include <ATen/core/Tensor.h>

#include "linalg/rsvd.h"

namespace mlagpt::launch {
class Communicator;
}

namespace mlagpt::linalg {

enum class Split { kRows, kColumns };

RsvdResult sharded_rsvd(const at::Tensor& local_block, Split split, launch::Communicator& comm,
                        const RsvdOptions& options);

}  // namespace mlagpt::linalg
