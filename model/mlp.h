// The feed-forward block: GELU (exact, erf) MLP proj(gelu(fc(x))) as GPT-2, or SwiGLU proj(silu(gate(x)) * fc(x))
// as LLaMA/DeepSeek. Projections are swappable like attention's.
//
// Over a tensor-parallel group each rank holds mlp_hidden / tp hidden units: fc (and gate) column-parallel, proj
// row-parallel, the input read through copy_to_tensor_parallel_region; one sum forward, one backward (Megatron).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "model/projection.h"
#include "model/tensor_parallel.h"

namespace mlagpt::model {

class Mlp final : public torch::nn::Module {
 public:
  Mlp(const ModelConfig& config, const TensorParallel& group);
  at::Tensor forward(const at::Tensor& x);  // [B, T, d] -> [B, T, d]
  // As Attention::splits().
  const std::map<std::string, ParameterSplit, std::less<>>& splits() const { return splits_; }
  // As Attention's: "gate" (swiglu), "fc", "proj".
  std::shared_ptr<Projection> projection(const std::string& name) const;
  TpLayout layout(const std::string& name) const;
  std::vector<std::string> projection_names() const;
  void replace_projection(const std::string& name, std::shared_ptr<Projection> projection);

 private:
  std::shared_ptr<Projection>& slot(const std::string& name);
  const TensorParallel& group_;
  MlpKind kind_;
  double dropout_;
  std::shared_ptr<Projection> gate_;  // swiglu only
  std::shared_ptr<Projection> fc_;
  std::shared_ptr<Projection> proj_;
  std::map<std::string, ParameterSplit, std::less<>> splits_;
};

}  // namespace mlagpt::model
