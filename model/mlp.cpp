#include "model/mlp.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/silu.h>

namespace mlagpt::model {

Mlp::Mlp(const ModelConfig& config, const TensorParallel& group)
    : group_(group), kind_(config.mlp), dropout_(config.dropout) {
  const int64_t d = config.n_embd;
  const int64_t hidden = config.mlp_hidden / group.size();  // this rank's
  if (kind_ == MlpKind::kSwiglu) {
    gate_ = register_module("gate", std::make_shared<DenseLinear>(d, hidden, config.bias));
    add_projection_splits(splits_, "gate", TpLayout::kColumn, config.bias);
  }
  fc_ = register_module("fc", std::make_shared<DenseLinear>(d, hidden, config.bias));
  add_projection_splits(splits_, "fc", TpLayout::kColumn, config.bias);
  proj_ = register_module("proj", std::make_shared<DenseLinear>(hidden, d, config.bias));
  add_projection_splits(splits_, "proj", TpLayout::kRow, config.bias);
}

at::Tensor Mlp::forward(const at::Tensor& input) {
  const at::Tensor x = copy_to_tensor_parallel_region(input, group_);
  const at::Tensor hidden = kind_ == MlpKind::kSwiglu ? at::silu(gate_->forward(x)) * fc_->forward(x)
                                                      : at::gelu(fc_->forward(x));  // [B, T, hidden / tp]
  return at::dropout(row_parallel_forward(*proj_, hidden, group_), is_training() ? dropout_ : 0.0, is_training());
}

}  // namespace mlagpt::model
