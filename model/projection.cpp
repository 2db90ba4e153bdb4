#include "model/projection.h"

#include <ATen/TensorOperators.h>
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

void add_projection_splits(std::map<std::string, ParameterSplit, std::less<>>& splits, const std::string& name,
                           TpLayout layout, bool bias) {
  switch (layout) {
    case TpLayout::kColumn:
      splits[name + ".weight"] = {.dim = 0};
      if (bias) {
        splits[name + ".bias"] = {.dim = 0};
      }
      break;
    case TpLayout::kRow:
      splits[name + ".weight"] = {.dim = 1};
      if (bias) {
        splits[name + ".bias"] = {};  // the whole gradient on every rank: it is added after the sum
      }
      break;
    case TpLayout::kReplicated:
      splits[name + ".weight"] = {.sum_gradient = true};
      if (bias) {
        splits[name + ".bias"] = {.sum_gradient = true};
      }
      break;
  }
}

at::Tensor row_parallel_forward(Projection& projection, const at::Tensor& x, const TensorParallel& group) {
  if (group.size() == 1) {
    return projection.forward(x);
  }
  const at::Tensor partial = at::linear(x, projection.effective_weight());  // [..., out], this rank's inputs only
  const at::Tensor sum = reduce_from_tensor_parallel_region(partial, group);
  return projection.bias().defined() ? sum + projection.bias() : sum;
}

}  // namespace mlagpt::model
