#include "model/rope.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/complex.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/outer.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/view_as_complex.h>
#include <ATen/ops/view_as_real.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>

#include <fmt/format.h>

#include "launch/error.h"

namespace mlagpt::model {
namespace {

// angles[p, i] = (start + p) * theta^(-2i/D) in float64: [length, D/2].
at::Tensor rope_angles(int64_t start, int64_t length, int64_t D, double theta, c10::Device device) {
  const auto f64 = at::TensorOptions().dtype(at::kDouble).device(device);
  const at::Tensor inverse_frequency = at::pow(theta, at::arange(0, D, 2, f64) / -static_cast<double>(D));  // [D/2]
  return at::outer(at::arange(start, start + length, f64), inverse_frequency);
}

// [T, 1, ..., 1, D/2]: a [T, D/2] table broadcast over x's middle dims.
std::vector<int64_t> table_shape(const at::Tensor& x) {
  std::vector<int64_t> shape{x.size(1)};
  for (int64_t d = 2; d < x.dim() - 1; ++d) {
    shape.push_back(1);
  }
  shape.push_back(x.size(-1) / 2);
  return shape;
}

// x [B, T, ..., D] viewed as [B, T, ..., D/2, 2].
at::Tensor as_pairs(const at::Tensor& x) {
  std::vector<int64_t> pairs(x.sizes().begin(), x.sizes().end() - 1);
  pairs.push_back(x.size(-1) / 2);
  pairs.push_back(2);
  return x.reshape(pairs);
}

// Rotates x [B, T, ..., D] by cos and sin [T, D/2] (x's dtype).
at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos_table, const at::Tensor& sin_table) {
  const std::vector<int64_t> shape = table_shape(x);
  const at::Tensor cos = cos_table.view(shape);
  const at::Tensor sin = sin_table.view(shape);
  const at::Tensor xp = as_pairs(x);         // [B, T, ..., D/2, 2]
  const at::Tensor even = xp.select(-1, 0);  // [B, T, ..., D/2]
  const at::Tensor odd = xp.select(-1, 1);
  return at::stack({even * cos - odd * sin, even * sin + odd * cos}, -1).flatten(-2);  // [B, T, ..., D]
}

// Whether view_as_complex can read pairs [..., D/2, 2] in place: unit stride within a pair, even strides and offset.
bool complex_viewable(const at::Tensor& pairs) {
  if (pairs.stride(-1) != 1 || pairs.storage_offset() % 2 != 0) {
    return false;
  }
  for (int64_t d = 0; d + 1 < pairs.dim(); ++d) {
    if (pairs.stride(d) % 2 != 0) {
      return false;
    }
  }
  return true;
}

// Rotates x [B, T, ..., D] (float or double) as D/2 complex numbers times rotation [T, D/2] (complex): one
// contiguous complex multiply, forward and backward, where the real form needs six strided kernels and a stack.
at::Tensor rotate_complex(const at::Tensor& x, const at::Tensor& rotation) {
  at::Tensor pairs = as_pairs(x);
  if (!complex_viewable(pairs)) {
    pairs = pairs.contiguous();
  }
  return at::view_as_real(at::view_as_complex(pairs) * rotation.view(table_shape(x))).flatten(-2);
}

bool has_complex(c10::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble;
}

}  // namespace

at::Tensor rope_apply_interleaved(const at::Tensor& x, int64_t start_pos, double theta) {
  const at::Tensor angles = rope_angles(start_pos, x.size(1), x.size(-1), theta, x.device());  // [T, D/2]
  return rotate(x, at::cos(angles).to(x.scalar_type()), at::sin(angles).to(x.scalar_type()));
}

RotaryTable::RotaryTable(int64_t dim, int64_t max_positions, double theta, int64_t unrotated)
    : dim_(dim), unrotated_(unrotated), max_positions_(max_positions), theta_(theta) {
  MLAGPT_CHECK(dim % 2 == 0 && unrotated % 2 == 0 && unrotated >= 0,
               fmt::format("rope: width {} and unrotated prefix {} must be even", dim, unrotated));
}

const RotaryTable::Entry& RotaryTable::entry(c10::ScalarType dtype, c10::Device device) const {
  for (const Entry& e : entries_) {
    if (e.dtype == dtype && e.device == device) {
      return e;
    }
  }
  const c10::InferenceMode normal_tensors(/*enabled=*/false);
  const c10::NoGradGuard no_grad;
  at::Tensor angles = rope_angles(0, max_positions_, dim_, theta_, device);  // [max_positions, D/2]
  if (unrotated_ > 0) {  // angle 0 for the leading pairs: cos 1, sin 0
    angles = at::cat({at::zeros({max_positions_, unrotated_ / 2}, angles.options()), angles}, 1);
  }
  Entry e{dtype, device, at::cos(angles).to(dtype), at::sin(angles).to(dtype), {}};
  if (has_complex(dtype)) {
    e.rotation = at::complex(e.cos, e.sin);  // cos + j sin, each already rounded to dtype
    e.cos = at::Tensor();                    // the real form's tables, unused for this dtype
    e.sin = at::Tensor();
  }
  entries_.push_back(std::move(e));
  return entries_.back();
}

at::Tensor RotaryTable::apply(const at::Tensor& x, int64_t start_pos) const {
  const int64_t T = x.size(1);
  MLAGPT_CHECK(x.size(-1) == unrotated_ + dim_ && start_pos >= 0 && start_pos + T <= max_positions_,
               fmt::format("rope: width {} (table {} + {}), positions [{}, {}) (table {})", x.size(-1), unrotated_,
                           dim_, start_pos, start_pos + T, max_positions_));
  const Entry& e = entry(x.scalar_type(), x.device());
  if (e.rotation.defined()) {
    return rotate_complex(x, e.rotation.narrow(0, start_pos, T));
  }
  return rotate(x, e.cos.narrow(0, start_pos, T), e.sin.narrow(0, start_pos, T));
}

}  // namespace mlagpt::model
