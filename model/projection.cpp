#include "model/projection.h"

#include <ATen/ops/linear.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>

#include <fmt/format.h>

#include "launch/error.h"

namespace mlagpt::model {

DenseLinear::DenseLinear(int64_t in_features, int64_t out_features, bool bias) : Projection(in_features, out_features) {
  weight_ = register_parameter("weight", at::zeros({out_features, in_features}));
  if (bias) {
    bias_ = register_parameter("bias", at::zeros({out_features}));
  }
}

at::Tensor DenseLinear::forward(const at::Tensor& x) {
  return at::linear(x, weight_, bias_);
}

LowRankLinear::LowRankLinear(int64_t in_features, int64_t out_features, int64_t rank, bool bias)
    : Projection(in_features, out_features) {
  if (rank <= 0 || rank > std::min(in_features, out_features)) {
    throw ConfigError(
        fmt::format("LowRankLinear: rank {} must be in [1, min(in {}, out {})]", rank, in_features, out_features));
  }
  weight_a_ = register_parameter("weight_a", at::zeros({rank, in_features}));
  weight_b_ = register_parameter("weight_b", at::zeros({out_features, rank}));
  if (bias) {
    bias_ = register_parameter("bias", at::zeros({out_features}));
  }
}

at::Tensor LowRankLinear::forward(const at::Tensor& x) {
  return at::linear(at::linear(x, weight_a_), weight_b_, bias_);  // [..., in] -> [..., rank] -> [..., out]
}

at::Tensor LowRankLinear::effective_weight() const {
  return at::mm(weight_b_, weight_a_);
}

}  // namespace mlagpt::model
