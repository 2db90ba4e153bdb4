// Rotary position embedding, interleaved-pair convention (as DeepSeek's reference code): for a vector x of even
// width D at position p, each pair (x[2i], x[2i+1]) is rotated by the angle p * theta^(-2i/D), i = 0 .. D/2-1.
// Equivalently, x viewed as D/2 complex numbers x[2i] + j x[2i+1] is multiplied by exp(j p theta^(-2i/D)).
// Implemented with real arithmetic (angles in float64, the rotation in x's dtype); tests compare it with a direct
// complex-number computation.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <vector>

namespace mlagpt::model {

// x: [B, T, ..., D] with positions start_pos .. start_pos + T - 1 along dim 1; returns the rotated tensor. Builds
// the angles on every call: the plain reference RotaryTable is checked against.
at::Tensor rope_apply_interleaved(const at::Tensor& x, int64_t start_pos, double theta);

// The same rotation with the cos/sin of every position 0 .. max_positions - 1 computed once per (dtype, device), in
// float64 and then rounded to the dtype, so a call costs only the rotation itself. For float32 and float64 the
// rotation is one complex multiply of x's pairs by cos + j sin (one contiguous kernel each way instead of six
// strided ones and a stack; BENCHMARKS.md has its effect on a training step); the same products and sums as
// rope_apply_interleaved, equal to it within one rounding. Other dtypes (bfloat16, which has no complex type) use
// the real form, bitwise rope_apply_interleaved's. Each attention layer holds one. Tables are plain constants
// (built outside inference mode and autograd), so a table first built while sampling serves training after it.
//
// With `unrotated` > 0 (even) the table covers x [..., unrotated + dim] whose first `unrotated` values pass through
// unchanged (their rotation is 1: bitwise unchanged) and whose last `dim` are rotated as a dim-wide RoPE: MLA
// rotates the rope part of its queries in place that way, with no split and concatenation of [nope | rope].
class RotaryTable {
 public:
  RotaryTable(int64_t dim, int64_t max_positions, double theta, int64_t unrotated = 0);
  // x: [B, T, ..., unrotated + dim] at positions start_pos .. start_pos + T - 1 (within max_positions, else Error).
  at::Tensor apply(const at::Tensor& x, int64_t start_pos) const;

 private:
  struct Entry {
    c10::ScalarType dtype;
    c10::Device device;
    at::Tensor cos;  // [max_positions, (unrotated + dim) / 2]; dtypes without a complex type only
    at::Tensor sin;
    at::Tensor rotation;  // cos + j sin, complex: float32 and float64, instead of cos and sin
  };
  const Entry& entry(c10::ScalarType dtype, c10::Device device) const;
  int64_t dim_;
  int64_t unrotated_;
  int64_t max_positions_;
  double theta_;
  mutable std::vector<Entry> entries_;
};

}  // namespace mlagpt::model
