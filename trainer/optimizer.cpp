#include "trainer/optimizer.h"

#include <fmt/format.h>

#include <cmath>
#include <numbers>

#include "launch/error.h"

namespace mlagpt::trainer {

bool decays(const std::string& name, const at::Tensor& parameter) {
  const bool embedding = name.rfind("wte.", 0) == 0 || name.rfind("wpe.", 0) == 0;
  return parameter.dim() >= 2 && !embedding;
}

std::vector<NamedParameter> adamw_parameters(model::Gpt& model) {
  const model::TensorParallel& group = model.tensor_parallel();
  std::vector<NamedParameter> parameters;
  for (const auto& item : model.named_parameters()) {
    NamedParameter parameter{item.key(), item.value(), decays(item.key(), item.value())};
    if (group.size() > 1) {
      const auto split = model.parameter_splits().find(item.key());
      if (split == model.parameter_splits().end()) {
        throw Error(fmt::format("the model does not say how its parameter {} lies over the {} tensor-parallel ranks",
                                item.key(), group.size()));
      }
      // A replica is the same on every rank of the group: its rank 0 counts it in the norm.
      parameter.in_grad_norm = split->second.split() || group.rank() == 0;
      parameter.sum_over_tensor_parallel = !split->second.split() && split->second.sum_gradient;
    }
    parameters.push_back(std::move(parameter));
  }
  return parameters;
}

AdamWSettings adamw_settings(const OptimConfig& config) {
  return {.beta1 = config.beta1, .beta2 = config.beta2, .eps = config.eps, .weight_decay = config.weight_decay};
}

double learning_rate(int64_t step, const OptimConfig& optim, const ScheduleConfig& schedule, int64_t decay_steps) {
  if (step < schedule.warmup_steps) {
    return optim.lr * static_cast<double>(step + 1) / static_cast<double>(schedule.warmup_steps);
  }
  if (step >= decay_steps) {
    return schedule.min_lr;
  }
  const double progress = static_cast<double>(step - schedule.warmup_steps) /
                          static_cast<double>(std::max<int64_t>(1, decay_steps - schedule.warmup_steps));
  const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  return schedule.min_lr + cosine * (optim.lr - schedule.min_lr);
}

}  // namespace mlagpt::trainer
