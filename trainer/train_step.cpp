#include "trainer/train_step.h"

#include <ATen/autocast_mode.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/nn/utils/clip_grad.h>

#include <cmath>
#include <limits>

#include "trainer/optimizer.h"

namespace mlagpt::trainer {
namespace {

// Enables bfloat16 autocast on `device` for the scope (matmuls in bf16; reductions, norms' statistics and the loss in
// float32, as autocast's op lists and the model's own upcasts decide), restoring the previous state after.
class Bf16Autocast {
 public:
  Bf16Autocast(c10::DeviceType device, bool enabled) : device_(device), enabled_(enabled) {
    if (enabled_) {
      previous_dtype_ = at::autocast::get_autocast_dtype(device_);
      at::autocast::set_autocast_dtype(device_, at::kBFloat16);
      at::autocast::set_autocast_enabled(device_, true);
    }
  }
  ~Bf16Autocast() {
    if (enabled_) {
      at::autocast::set_autocast_enabled(device_, false);
      at::autocast::set_autocast_dtype(device_, previous_dtype_);
      at::autocast::clear_cache();
    }
  }
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  c10::DeviceType device_;
  bool enabled_;
  at::ScalarType previous_dtype_ = at::kBFloat16;
};

}  // namespace

void average_gradients(model::Gpt& model, launch::Communicator& data_parallel) {
  if (data_parallel.size() == 1) {
    return;
  }
  for (auto& parameter : model.parameters()) {
    if (parameter.grad().defined()) {
      at::Tensor grad = parameter.mutable_grad();
      data_parallel.all_reduce(grad, launch::ReduceOp::kSum);
      grad.div_(static_cast<double>(data_parallel.size()));
    }
  }
}

TrainStep::TrainStep(model::Gpt& model, torch::optim::AdamW& optimizer, const TrainConfig& config,
                     launch::Communicator& data_parallel)
    : model_(model),
      optimizer_(optimizer),
      config_(config),
      data_parallel_(data_parallel),
      parameters_(model.parameters()) {
  const bool cuda = !parameters_.empty() && parameters_.front().is_cuda();
  device_type_ = cuda ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
  // "auto" is bf16 on CUDA, where it is fast; on a CPU only when asked for, since few CPUs have bf16 matmul units.
  autocast_bf16_ = config.run.dtype == "bfloat16" || (cuda && config.run.dtype == "auto");
}

StepResult TrainStep::run(int64_t step, const std::function<MicroBatch()>& next_batch) {
  StepResult result;
  result.learning_rate = learning_rate(step, config_.optim, config_.schedule, config_.decay_steps());
  set_learning_rate(optimizer_, result.learning_rate);
  optimizer_.zero_grad(/*set_to_none=*/true);
  model_.train();
  const int64_t micro_batches = config_.optim.grad_accum;
  double loss_sum = 0;
  for (int64_t i = 0; i < micro_batches; ++i) {
    const MicroBatch batch = next_batch();
    at::Tensor loss;
    {
      const Bf16Autocast autocast(device_type_, autocast_bf16_);
      loss = model::cross_entropy_loss(model_.forward(batch.x), batch.y) / static_cast<double>(micro_batches);
    }
    loss.backward();
    loss_sum += loss.item<double>();
  }
  average_gradients(model_, data_parallel_);
  if (data_parallel_.size() > 1) {
    at::Tensor loss =
        at::scalar_tensor(loss_sum / data_parallel_.size(), parameters_.front().options().dtype(at::kDouble));
    data_parallel_.all_reduce(loss, launch::ReduceOp::kSum);
    loss_sum = loss.item<double>();
  }
  const double max_norm =
      config_.optim.grad_clip > 0 ? config_.optim.grad_clip : std::numeric_limits<double>::infinity();
  result.grad_norm = torch::nn::utils::clip_grad_norm_(parameters_, max_norm);
  result.loss = loss_sum;
  result.finite = std::isfinite(loss_sum) && std::isfinite(result.grad_norm);
  if (result.finite) {
    optimizer_.step();
  } else {
    optimizer_.zero_grad(/*set_to_none=*/true);
  }
  return result;
}

}  // namespace mlagpt::trainer
