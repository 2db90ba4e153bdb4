// The vocabulary split over a tensor-parallel group (Megatron-LM): rank r holds rows [r V / tp, (r + 1) V / tp) of
// the token embedding (and of the output head, which is the same matrix when tied), so no rank holds, or computes
// logits for, the whole vocabulary.
//
// vocab_parallel_embedding: each rank looks up the ids in its rows (zeros for the others) and the partial
// embeddings are summed over the group: one all-reduce of [B, T, d] forward, none backward.
//
// vocab_parallel_cross_entropy: the mean cross entropy of logits split by vocabulary. Per target position it needs
// the maximum logit (all-reduce max, for a stable exponent), and the sum of exponentials and the target's logit
// (one all-reduce of both): three numbers per position instead of V. Backward needs no communication: each rank's
// gradient is softmax - one_hot over its own columns. Targets equal to kIgnoreIndex do not count; the mean is over
// the others (NaN when there are none, as torch's). Computed in float32 (float64 for float64 logits).
#pragma once

#include <ATen/core/Tensor.h>

#include "model/tensor_parallel.h"

namespace mlagpt::model {

// weight: this rank's rows [V / tp, d]; idx: [B, T] int64 ids of the whole vocabulary -> [B, T, d] on every rank.
at::Tensor vocab_parallel_embedding(const at::Tensor& weight, const at::Tensor& idx, const TensorParallel& group);

// logits: [B, T, V / tp], this rank's columns; targets: [B, T] ids of the whole vocabulary -> scalar, the same on
// every rank.
at::Tensor vocab_parallel_cross_entropy(const at::Tensor& logits, const at::Tensor& targets,
                                        const TensorParallel& group);

}  // namespace mlagpt::model
