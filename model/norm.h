// The two normalizations of the model, as modules with the parameter names the checkpoints and the PyTorch
// reference use: RmsNorm (`weight`) and LayerNorm (`weight`, and `bias` when the model has biases).
// RmsNorm computes in at least float32 (x * rsqrt(mean(x^2) + eps) * weight) and returns the input's dtype, so
// bfloat16 activations keep a float32 statistic: on a CPU in one fused pass each way (rms_norm_cpu.h), elsewhere
// through at::rms_norm (LibTorch's fused kernel where it has one).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <memory>

#include "model/model_config.h"

namespace mlagpt::model {

class Norm : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x) = 0;
};

class RmsNorm final : public Norm {
 public:
  RmsNorm(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x) override;

 private:
  at::Tensor weight_;
  double eps_;
};

class LayerNorm final : public Norm {
 public:
  LayerNorm(int64_t dim, double eps, bool bias);
  at::Tensor forward(const at::Tensor& x) override;

 private:
  at::Tensor weight_;
  at::Tensor bias_;
  double eps_;
  int64_t dim_;
};

std::shared_ptr<Norm> make_norm(NormKind kind, int64_t dim, double eps, bool bias);

}  // namespace mlagpt::model
