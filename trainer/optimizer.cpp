#include "trainer/optimizer.h"

#include <cmath>
#include <numbers>

namespace mlagpt::trainer {

bool decays(const std::string& name, const at::Tensor& parameter) {
  const bool embedding = name.rfind("wte.", 0) == 0 || name.rfind("wpe.", 0) == 0;
  return parameter.dim() >= 2 && !embedding;
}

std::unique_ptr<torch::optim::AdamW> make_adamw(model::Gpt& model, const OptimConfig& config) {
  std::vector<at::Tensor> with_decay;
  std::vector<at::Tensor> without_decay;
  for (const auto& item : model.named_parameters()) {
    (decays(item.key(), item.value()) ? with_decay : without_decay).push_back(item.value());
  }
  const auto options = [&](double weight_decay) {
    return std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(config.lr)
                                                            .betas({config.beta1, config.beta2})
                                                            .eps(config.eps)
                                                            .weight_decay(weight_decay));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(with_decay, options(config.weight_decay));
  groups.emplace_back(without_decay, options(0.0));
  return std::make_unique<torch::optim::AdamW>(groups, *options(config.weight_decay));
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

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) {
    group.options().set_lr(lr);
  }
}

}  // namespace mlagpt::trainer
