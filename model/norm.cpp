#include "model/norm.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/rms_norm.h>
#include <ATen/ops/zeros.h>

#include "model/rms_norm_cpu.h"

namespace mlagpt::model {

RmsNorm::RmsNorm(int64_t dim, double eps) : eps_(eps) {
  weight_ = register_parameter("weight", at::ones({dim}));
}

at::Tensor RmsNorm::forward(const at::Tensor& x) {
  const at::ScalarType compute = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor wide = x.to(compute);  // no-ops for a float32 x and weight
  const at::Tensor weight = weight_.to(compute);
  if (rms_norm_cpu_supports(wide, weight)) {
    return rms_norm_cpu(wide, weight, eps_).to(x.scalar_type());
  }
  return at::rms_norm(wide, {weight.size(0)}, weight, eps_).to(x.scalar_type());
}

LayerNorm::LayerNorm(int64_t dim, double eps, bool bias) : eps_(eps), dim_(dim) {
  weight_ = register_parameter("weight", at::ones({dim}));
  if (bias) {
    bias_ = register_parameter("bias", at::zeros({dim}));
  }
}

at::Tensor LayerNorm::forward(const at::Tensor& x) {
  return at::layer_norm(x, {dim_}, weight_, bias_, eps_);
}

std::shared_ptr<Norm> make_norm(NormKind kind, int64_t dim, double eps, bool bias) {
  if (kind == NormKind::kRmsNorm) {
    return std::make_shared<RmsNorm>(dim, eps);
  }
  return std::make_shared<LayerNorm>(dim, eps, bias);
}

}  // namespace mlagpt::model
