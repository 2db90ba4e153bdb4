#include "model/mlp.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/silu.h>

#include <fmt/format.h>

#include "launch/error.h"

namespace mlagpt::model {

Mlp::Mlp(const ModelConfig& config, const TensorParallel& group)
    : group_(group), kind_(config.mlp), dropout_(config.dropout) {
  const int64_t d = config.n_embd;
  const int64_t hidden = config.mlp_hidden / group.size();  // this rank's
  if (kind_ == MlpKind::kSwiglu) {
    gate_ = register_module("gate", std::make_shared<DenseLinear>(d, hidden, config.bias));
    add_projection_splits(splits_, "gate", TpLayout::kColumn, *gate_);
  }
  fc_ = register_module("fc", std::make_shared<DenseLinear>(d, hidden, config.bias));
  add_projection_splits(splits_, "fc", TpLayout::kColumn, *fc_);
  proj_ = register_module("proj", std::make_shared<DenseLinear>(hidden, d, config.bias));
  add_projection_splits(splits_, "proj", TpLayout::kRow, *proj_);
}

std::shared_ptr<Projection>& Mlp::slot(const std::string& name) {
  if (name == "gate" && gate_) {
    return gate_;
  }
  if (name == "fc") {
    return fc_;
  }
  if (name == "proj") {
    return proj_;
  }
  throw Error(fmt::format("the {} MLP has no projection '{}' (it has {})", to_string(kind_), name,
                          kind_ == MlpKind::kSwiglu ? "gate, fc, proj" : "fc, proj"));
}

std::shared_ptr<Projection> Mlp::projection(const std::string& name) const {
  return const_cast<Mlp*>(this)->slot(name);
}

TpLayout Mlp::layout(const std::string& name) const {
  projection(name);
  return name == "proj" ? TpLayout::kRow : TpLayout::kColumn;
}

std::vector<std::string> Mlp::projection_names() const {
  if (kind_ == MlpKind::kSwiglu) {
    return {"fc", "gate", "proj"};
  }
  return {"fc", "proj"};
}

void Mlp::replace_projection(const std::string& name, std::shared_ptr<Projection> replacement) {
  std::shared_ptr<Projection>& current = slot(name);
  if (current->in_features() != replacement->in_features() || current->out_features() != replacement->out_features()) {
    throw Error(fmt::format("replace_projection('{}'): shape {}x{} != {}x{}", name, replacement->out_features(),
                            replacement->in_features(), current->out_features(), current->in_features()));
  }
  replace_module(name, replacement);
  add_projection_splits(splits_, name, layout(name), *replacement);
  current = std::move(replacement);
}

at::Tensor Mlp::forward(const at::Tensor& input) {
  const at::Tensor x = copy_to_tensor_parallel_region(input, group_);
  const at::Tensor hidden = kind_ == MlpKind::kSwiglu ? at::silu(gate_->forward(x)) * fc_->forward(x)
                                                      : at::gelu(fc_->forward(x));  // [B, T, hidden / tp]
  return at::dropout(row_parallel_forward(*proj_, hidden, group_), is_training() ? dropout_ : 0.0, is_training());
}

}  // namespace mlagpt::model
