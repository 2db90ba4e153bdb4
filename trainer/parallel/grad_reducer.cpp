#include "trainer/parallel/grad_reducer.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <fmt/format.h>

#include <chrono>

#include "launch/error.h"

namespace mlagpt::trainer {

class GradReducer::Hook final : public torch::autograd::PostAccumulateGradHook {
 public:
  Hook(GradReducer& reducer, int param) : reducer_(reducer), param_(param) {}
  void operator()(const torch::autograd::Variable& /*tensor*/) override { reducer_.on_gradient(param_); }

 private:
  GradReducer& reducer_;
  int param_;
};

GradReducer::GradReducer(FlatAdamW& optimizer, bool overlap, const model::TensorParallel& tensor_parallel)
    : optimizer_(optimizer),
      overlap_(overlap),
      tensor_parallel_(tensor_parallel),
      arrived_(optimizer.layout().params.size(), 0),
      pending_(optimizer.layout().buckets.size(), 0),
      works_(optimizer.layout().buckets.size()) {
  const auto& parameters = optimizer_.parameters();
  if (tensor_parallel_.size() > 1) {
    for (size_t i = parameters.size(); i-- > 0;) {
      if (parameters[i].sum_over_tensor_parallel) {
        tp_order_.push_back(static_cast<int>(i));
      }
    }
  }
  for (size_t i = 0; i < parameters.size(); ++i) {
    grad_data_.push_back(parameters[i].tensor.grad().const_data_ptr());
    torch::autograd::impl::set_post_acc_grad_hooks(parameters[i].tensor,
                                                   std::make_unique<Hook>(*this, static_cast<int>(i)));
  }
}

GradReducer::~GradReducer() {
  for (const NamedParameter& parameter : optimizer_.parameters()) {
    torch::autograd::impl::set_post_acc_grad_hooks(parameter.tensor, nullptr);
  }
  for (auto& work : works_) {
    if (work) {
      try {
        work->wait();
      } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor must not throw; the error was the caller's
      }
    }
  }
}

void GradReducer::arm() {
  const FlatLayout& layout = optimizer_.layout();
  std::fill(arrived_.begin(), arrived_.end(), 0);
  for (size_t b = 0; b < layout.buckets.size(); ++b) {
    pending_[b] = static_cast<int64_t>(layout.buckets[b].params.size());
    works_[b].reset();
  }
  next_ = 0;
  next_tp_ = 0;
  started_in_backward_ = 0;
  armed_ = true;
}

void GradReducer::on_gradient(int param) {
  const NamedParameter& parameter = optimizer_.parameters()[static_cast<size_t>(param)];
  if (parameter.tensor.grad().const_data_ptr() != grad_data_[static_cast<size_t>(param)]) {
    throw Error(fmt::format(
        "GradReducer: the gradient of {} no longer lives in the flat gradient buffer (was it set to none?); zero "
        "gradients with FlatAdamW::zero_grad()",
        parameter.name));
  }
  if (!armed_ || arrived_[static_cast<size_t>(param)] != 0) {
    return;
  }
  arrived_[static_cast<size_t>(param)] = 1;
  if (parameter.sum_over_tensor_parallel && !tp_order_.empty()) {
    sum_over_tensor_parallel(/*all=*/false);
  } else {
    count_for_bucket(param);
  }
}

void GradReducer::sum_over_tensor_parallel(bool all) {
  for (; next_tp_ < tp_order_.size(); ++next_tp_) {
    const int param = tp_order_[next_tp_];
    if (!all && arrived_[static_cast<size_t>(param)] == 0) {
      return;
    }
    at::Tensor grad = optimizer_.parameters()[static_cast<size_t>(param)].tensor.grad();  // a view of the flat buffer
    tensor_parallel_.all_reduce_sum(grad);
    if (!all) {
      count_for_bucket(param);
    }
  }
}

void GradReducer::count_for_bucket(int param) {
  const int bucket = optimizer_.layout().params[static_cast<size_t>(param)].bucket;
  --pending_[static_cast<size_t>(bucket)];
  if (!overlap_) {
    return;
  }
  // Drive the reductions in flight (MPI progresses only inside MPI calls), then start what became ready.
  for (int b = 0; b < next_; ++b) {
    works_[static_cast<size_t>(b)]->test();
  }
  start_ready_buckets();
}

void GradReducer::start_ready_buckets() {
  while (next_ < static_cast<int>(pending_.size()) && pending_[static_cast<size_t>(next_)] == 0) {
    start(next_);
    ++started_in_backward_;
    ++next_;
  }
}

void GradReducer::start(int bucket) {
  launch::Communicator& comm = optimizer_.comm();
  at::Tensor grads = optimizer_.bucket_grads(bucket);
  if (optimizer_.zero()) {
    at::Tensor shard = optimizer_.shard_grads(bucket);
    works_[static_cast<size_t>(bucket)] = comm.reduce_scatter_async(grads, shard, launch::ReduceOp::kSum);
  } else {
    works_[static_cast<size_t>(bucket)] = comm.all_reduce_async(grads, launch::ReduceOp::kSum);
  }
}

std::vector<std::string> GradReducer::finish() {
  if (!armed_) {
    throw Error("GradReducer::finish: not armed (call arm() before the last backward of the step)");
  }
  armed_ = false;
  const auto start_time = std::chrono::steady_clock::now();
  sum_over_tensor_parallel(/*all=*/true);  // before any bucket holding those gradients starts
  for (; next_ < static_cast<int>(pending_.size()); ++next_) {
    start(next_);
  }
  for (auto& work : works_) {
    work->wait();
  }
  finish_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  std::vector<std::string> missing;
  for (size_t i = 0; i < arrived_.size(); ++i) {
    if (arrived_[i] == 0) {
      missing.push_back(optimizer_.parameters()[i].name);
    }
  }
  return missing;
}

}  // namespace mlagpt::trainer
