// Rotary position embedding, interleaved-pair convention (as DeepSeek's reference code): for a vector x of even
// width D at position p, each pair (x[2i], x[2i+1]) is rotated by the angle p * theta^(-2i/D), i = 0 .. D/2-1.
// Equivalently, x viewed as D/2 complex numbers x[2i] + j x[2i+1] is multiplied by exp(j p theta^(-2i/D)).
// Implemented with real arithmetic (angles in float64, the rotation in x's dtype); tests compare it with a direct
// complex-number computation.
#pragma once

#include <ATen/core/Tensor.h>

namespace mlagpt::model {

// x: [B, T, ..., D] with positions start_pos .. start_pos + T - 1 along dim 1; returns the rotated tensor.
at::Tensor rope_apply_interleaved(const at::Tensor& x, int64_t start_pos, double theta);

}  // namespace mlagpt::model
