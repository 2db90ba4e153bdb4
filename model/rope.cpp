#include "model/rope.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/outer.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/stack.h>

#include <vector>

namespace mlagpt::model {

at::Tensor rope_apply_interleaved(const at::Tensor& x, int64_t start_pos, double theta) {
  const int64_t T = x.size(1);
  const int64_t D = x.size(-1);
  const auto f64 = at::TensorOptions().dtype(at::kDouble).device(x.device());
  const at::Tensor inverse_frequency = at::pow(theta, at::arange(0, D, 2, f64) / -static_cast<double>(D));  // [D/2]
  const at::Tensor angles = at::outer(at::arange(start_pos, start_pos + T, f64), inverse_frequency);        // [T, D/2]
  // Broadcast [T, D/2] over x's middle dims: [T, 1, ..., 1, D/2].
  std::vector<int64_t> shape{T};
  for (int64_t d = 2; d < x.dim() - 1; ++d) {
    shape.push_back(1);
  }
  shape.push_back(D / 2);
  const at::Tensor cos = at::cos(angles).to(x.scalar_type()).view(shape);
  const at::Tensor sin = at::sin(angles).to(x.scalar_type()).view(shape);
  std::vector<int64_t> pairs(x.sizes().begin(), x.sizes().end() - 1);
  pairs.push_back(D / 2);
  pairs.push_back(2);
  const at::Tensor xp = x.reshape(pairs);    // [B, T, ..., D/2, 2]
  const at::Tensor even = xp.select(-1, 0);  // [B, T, ..., D/2]
  const at::Tensor odd = xp.select(-1, 1);
  return at::stack({even * cos - odd * sin, even * sin + odd * cos}, -1).flatten(-2);  // [B, T, ..., D]
}

}  // namespace mlagpt::model
