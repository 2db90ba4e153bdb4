#include "model/projection.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>

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
  if (rank <= 0) {
    throw ConfigError(fmt::format("LowRankLinear [{} x {}]: rank {} must be >= 1", out_features, in_features, rank));
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
  if (c10::GradMode::is_enabled()) {
    return at::mm(weight_b_, weight_a_);
  }
  const std::array<int64_t, 2> versions{weight_a_._version(), weight_b_._version()};
  const std::array<const void*, 2> sources{weight_a_.data_ptr(), weight_b_.data_ptr()};
  if (!product_.defined() || versions != product_versions_ || sources != product_sources_) {
    product_ = at::mm(weight_b_, weight_a_);
    product_versions_ = versions;
    product_sources_ = sources;
  }
  return product_;
}

void add_projection_splits(std::map<std::string, ParameterSplit, std::less<>>& splits, const std::string& name,
                           TpLayout layout, const Projection& projection) {
  for (const char* suffix : {".weight", ".weight_a", ".weight_b", ".bias"}) {
    splits.erase(name + suffix);
  }
  const bool bias = projection.bias().defined();
  if (dynamic_cast<const LowRankLinear*>(&projection) != nullptr) {
    switch (layout) {
      case TpLayout::kColumn:
        splits[name + ".weight_b"] = {.dim = 0};
        splits[name + ".weight_a"] = {.sum_gradient = true};
        break;
      case TpLayout::kRow:
        splits[name + ".weight_a"] = {.dim = 1};
        splits[name + ".weight_b"] = {};
        break;
      case TpLayout::kReplicated:
        splits[name + ".weight_a"] = {.sum_gradient = true};
        splits[name + ".weight_b"] = {.sum_gradient = true};
        break;
    }
    if (bias) {
      splits[name + ".bias"] = layout == TpLayout::kColumn
                                   ? ParameterSplit{.dim = 0}
                                   : ParameterSplit{.sum_gradient = layout == TpLayout::kReplicated};
    }
    return;
  }
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
  if (auto* low_rank = dynamic_cast<LowRankLinear*>(&projection)) {
    const at::Tensor inner = reduce_from_tensor_parallel_region(at::linear(x, low_rank->weight_a()), group);
    return at::linear(inner, low_rank->weight_b(), low_rank->bias());
  }
  const at::Tensor partial = at::linear(x, projection.effective_weight());  // [..., out], this rank's inputs only
  const at::Tensor sum = reduce_from_tensor_parallel_region(partial, group);
  return projection.bias().defined() ? sum + projection.bias() : sum;
}

}  // namespace mlagpt::model
