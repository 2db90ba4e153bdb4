#include "trainer/train_step.h"

#include <ATen/autocast_mode.h>
#include <ATen/ops/clamp.h>
#include <ATen/ops/full.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <atomic>
#include <cmath>
#include <csignal>

#include "launch/error.h"
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

// The statistics the ranks all-reduce: [loss / ranks, squared gradient norm (each element once), parameters without
// a gradient, one count per stop signal].
enum StatSlot : int64_t { kStatLoss = 0, kStatGradSquare = 1, kStatMissing = 2, kStatSignals = 3 };
// The report made of them: [loss, grad norm, skipped, missing, one count per stop signal].
enum ReportSlot : int64_t { kLoss = 0, kGradNorm = 1, kSkipped = 2, kMissing = 3, kSignals = 4 };

std::atomic<int64_t> reads{0};

}  // namespace

int64_t step_report_reads() {
  return reads.load();
}

const std::vector<int>& reported_stop_signals() {
  static const std::vector<int> signals = {SIGINT, SIGUSR1, SIGTERM};
  return signals;
}

std::vector<StepResult> read_step_reports(const std::vector<StepReport>& reports) {
  std::vector<StepResult> results;
  if (reports.empty()) {
    return results;
  }
  ++reads;
  std::vector<at::Tensor> values;
  for (const StepReport& report : reports) {
    values.push_back(report.values);
  }
  const at::Tensor host = at::stack(values).cpu();  // the one synchronization
  const auto* data = host.const_data_ptr<double>();
  const int64_t width = host.size(1);
  for (size_t i = 0; i < reports.size(); ++i) {
    const double* row = data + static_cast<int64_t>(i) * width;
    if (row[kMissing] > 0) {
      const std::vector<std::string>& here = reports[i].missing_here;
      throw Error(fmt::format(
          "{} parameter gradient(s) were missing on some data-parallel rank in one step, so the ranks' gradient "
          "buckets disagree (a parameter unused on one rank only); {}",
          static_cast<int64_t>(row[kMissing]),
          here.empty() ? std::string("this rank had them all (see the other ranks' logs)")
                       : fmt::format("this rank got none for: {}", fmt::join(here, ", "))));
    }
    StepResult result;
    result.loss = row[kLoss];
    result.grad_norm = row[kGradNorm];
    result.learning_rate = reports[i].learning_rate;
    result.finite = row[kSkipped] == 0;
    for (size_t s = 0; s < reported_stop_signals().size(); ++s) {
      if (row[kSignals + static_cast<int64_t>(s)] > 0) {
        result.stop_signal = std::max(result.stop_signal, reported_stop_signals()[s]);
      }
    }
    results.push_back(result);
  }
  return results;
}

TrainStep::TrainStep(model::Gpt& model, FlatAdamW& optimizer, GradReducer& reducer, const TrainConfig& config,
                     launch::Communicator& data_parallel)
    : model_(model),
      optimizer_(optimizer),
      reducer_(reducer),
      config_(config),
      data_parallel_(data_parallel),
      device_(optimizer.parameters().front().tensor.device()) {
  // "auto" is bf16 on CUDA, where it is fast; on a CPU only when asked for, since few CPUs have bf16 matmul units.
  autocast_bf16_ = config.run.dtype == "bfloat16" || (device_.is_cuda() && config.run.dtype == "auto");
}

StepReport TrainStep::run(int64_t step, const std::function<MicroBatch()>& next_batch,
                          const std::function<int()>& stop_signal) {
  StepReport report;
  report.learning_rate = learning_rate(step, config_.optim, config_.schedule, config_.decay_steps());
  optimizer_.zero_grad();
  model_.train();
  const int64_t micro_batches = config_.optim.grad_accum;
  const int ranks = data_parallel_.size();
  const at::TensorOptions float64 = at::TensorOptions().dtype(at::kDouble).device(device_);
  at::Tensor loss_sum = at::zeros({}, float64);
  for (int64_t i = 0; i < micro_batches; ++i) {
    const MicroBatch batch = next_batch();
    at::Tensor loss;
    {
      const Bf16Autocast autocast(device_.type(), autocast_bf16_);
      loss = model_.loss(batch.x, batch.y) / static_cast<double>(micro_batches);
    }
    loss_sum += loss.detach().to(at::kDouble);
    if (i + 1 == micro_batches) {
      reducer_.arm();
    }
    // The collectives sum; scaling by 1 / ranks here makes the sum the mean (exactly, for a power of two).
    (ranks > 1 ? loss * (1.0 / ranks) : loss).backward();
  }
  report.missing_here = reducer_.finish();

  // Summed over the data-parallel and then the tensor-parallel group, which together are the world. Every rank of a
  // tensor-parallel group has the same loss, so its rank 0 counts it; the optimizer leaves out of the squared norm
  // the replicas another rank of the group counts.
  const model::TensorParallel& tensor_parallel = model_.tensor_parallel();
  std::vector<at::Tensor> stats = {
      tensor_parallel.rank() != 0 ? at::zeros({}, float64)
      : ranks > 1                 ? loss_sum / static_cast<double>(ranks)
                                  : loss_sum,
      optimizer_.zero() || data_parallel_.rank() == 0 ? optimizer_.grad_square_sum() : at::zeros({}, float64),
      at::full({}, static_cast<double>(report.missing_here.size()), float64)};
  const int received = stop_signal();
  for (const int signal : reported_stop_signals()) {
    stats.push_back(at::full({}, received == signal ? 1.0 : 0.0, float64));
  }
  at::Tensor agreed = at::stack(stats);
  data_parallel_.all_reduce(agreed, launch::ReduceOp::kSum);
  tensor_parallel.all_reduce_sum(agreed);

  const at::Tensor loss = agreed[kStatLoss];
  const at::Tensor norm = agreed[kStatGradSquare].sqrt();
  const at::Tensor missing = agreed[kStatMissing];
  const at::Tensor skipped = at::logical_not(at::isfinite(loss) & at::isfinite(norm) & (missing == 0)).to(at::kFloat);
  std::optional<at::Tensor> clip_coef;
  if (config_.optim.grad_clip > 0) {
    // As torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
    clip_coef = at::clamp(config_.optim.grad_clip / (norm + 1e-6), std::nullopt, 1.0).to(at::kFloat);
  }
  optimizer_.step(report.learning_rate, clip_coef, skipped);

  std::vector<at::Tensor> values = {loss, norm, skipped.to(at::kDouble), missing};
  for (size_t s = 0; s < reported_stop_signals().size(); ++s) {
    values.push_back(agreed[kStatSignals + static_cast<int64_t>(s)]);
  }
  report.values = at::stack(values);
  return report;
}

}  // namespace mlagpt::trainer
