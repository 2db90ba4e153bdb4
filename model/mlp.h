// The feed-forward block: GELU (exact, erf) MLP proj(gelu(fc(x))) as GPT-2, or SwiGLU proj(silu(gate(x)) * fc(x))
// as LLaMA/DeepSeek. Projections are swappable like attention's.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <memory>

#include "model/model_config.h"
#include "model/projection.h"

namespace mlagpt::model {

class Mlp final : public torch::nn::Module {
 public:
  explicit Mlp(const ModelConfig& config);
  at::Tensor forward(const at::Tensor& x);  // [B, T, d] -> [B, T, d]

 private:
  MlpKind kind_;
  double dropout_;
  std::shared_ptr<Projection> gate_;  // swiglu only
  std::shared_ptr<Projection> fc_;
  std::shared_ptr<Projection> proj_;
};

}  // namespace mlagpt::model
