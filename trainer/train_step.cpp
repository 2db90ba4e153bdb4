#include "trainer/train_step.h"

#include <ATen/autocast_mode.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/nn/utils/clip_grad.h>

#include <cmath>
#include <limits>

#include "trainer/optimizer.h"

namespace mlagpt::trainer {
namespace {

// Enables bfloat16 autocast on CUDA for the scope (matmuls in bf16, reductions and the loss in float32).
class CudaBf16Autocast {
 public:
  explicit CudaBf16Autocast(bool enabled) : enabled_(enabled) {
    if (enabled_) {
      previous_dtype_ = at::autocast::get_autocast_dtype(at::kCUDA);
      at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
      at::autocast::set_autocast_enabled(at::kCUDA, true);
    }
  }
  ~CudaBf16Autocast() {
    if (enabled_) {
      at::autocast::set_autocast_enabled(at::kCUDA, false);
      at::autocast::set_autocast_dtype(at::kCUDA, previous_dtype_);
      at::autocast::clear_cache();
    }
  }
  CudaBf16Autocast(const CudaBf16Autocast&) = delete;
  CudaBf16Autocast& operator=(const CudaBf16Autocast&) = delete;

 private:
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
  autocast_bf16_ = cuda && config.run.dtype != "float32";
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
      const CudaBf16Autocast autocast(autocast_bf16_);
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
