#include "model/attention.h"

#include <fmt/format.h>

#include "launch/error.h"
#include "model/attention_core.h"

namespace mlagpt::model {

std::shared_ptr<Projection> Attention::add_projection(const std::string& name, int64_t in, int64_t out,
                                                      TpLayout layout) {
  auto projection = register_module(name, std::make_shared<DenseLinear>(in, out, config_.bias));
  projections_[name] = projection;
  layouts_[name] = layout;
  add_projection_splits(splits_, name, layout, *projection);
  return projection;
}

at::Tensor Attention::attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                             double dropout) {
  if (dropout == 0.0) {
    return causal_attention(q, k, v, scale, 0.0);
  }
  const ShardedRngScope sharded(group_, q.device());
  return causal_attention(q, k, v, scale, dropout);
}

std::shared_ptr<Projection> Attention::projection(const std::string& name) const {
  const auto it = projections_.find(name);
  if (it != projections_.end()) {
    return it->second;
  }
  throw Error(fmt::format("attention has no projection '{}'", name));
}

TpLayout Attention::layout(const std::string& name) const {
  projection(name);  // names it in the error
  return layouts_.at(name);
}

std::vector<std::string> Attention::projection_names() const {
  std::vector<std::string> names;
  for (const auto& [name, projection] : projections_) {
    names.push_back(name);
  }
  return names;
}

void Attention::replace_projection(const std::string& name, std::shared_ptr<Projection> replacement) {
  const auto current = projection(name);
  if (current->in_features() != replacement->in_features() || current->out_features() != replacement->out_features()) {
    throw Error(fmt::format("replace_projection('{}'): shape {}x{} != {}x{}", name, replacement->out_features(),
                            replacement->in_features(), current->out_features(), current->in_features()));
  }
  replace_module(name, replacement);
  add_projection_splits(splits_, name, layouts_.at(name), *replacement);
  projections_[name] = std::move(replacement);
}

std::shared_ptr<Attention> make_attention(const ModelConfig& config, const TensorParallel& group) {
  if (config.attention == AttentionKind::kMla) {
    return std::make_shared<LatentAttention>(config, group);
  }
  return std::make_shared<StandardAttention>(config, group);
}

}  // namespace mlagpt::model
