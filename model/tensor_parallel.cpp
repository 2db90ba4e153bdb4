#include "model/tensor_parallel.h"

#include <ATen/Context.h>
#include <torch/csrc/autograd/custom_function.h>

#include <mutex>

#include <cstdint>

namespace mlagpt::model {
namespace {

class SingleDevice final : public TensorParallel {
 public:
  int64_t rank() const override { return 0; }
  int64_t size() const override { return 1; }
  void all_reduce_sum(at::Tensor& /*tensor*/) const override {}
  void all_reduce_max(at::Tensor& /*tensor*/) const override {}
};

// An autograd context holds IValues; the group travels as its address (it outlives the backward pass: the trainer
// owns it for the whole run).
const TensorParallel& group_of(torch::autograd::AutogradContext* ctx) {
  return *reinterpret_cast<const TensorParallel*>(ctx->saved_data["group"].toInt());
}

at::Tensor summed(const at::Tensor& x, const TensorParallel& group) {
  at::Tensor out = x.contiguous().clone();
  group.all_reduce_sum(out);
  return out;
}

struct CopyToRegion : public torch::autograd::Function<CopyToRegion> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t group) {
    ctx->saved_data["group"] = group;
    return x;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {summed(grads[0], group_of(ctx)), at::Tensor()};
  }
};

struct ReduceFromRegion : public torch::autograd::Function<ReduceFromRegion> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t group) {
    ctx->saved_data["group"] = group;
    return summed(x, *reinterpret_cast<const TensorParallel*>(group));
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* /*ctx*/,
                                                 torch::autograd::variable_list grads) {
    return {grads[0], at::Tensor()};
  }
};

int64_t address(const TensorParallel& group) {
  return reinterpret_cast<int64_t>(&group);
}

}  // namespace

const TensorParallel& single_device() {
  static const SingleDevice group;
  return group;
}

at::Tensor copy_to_tensor_parallel_region(const at::Tensor& x, const TensorParallel& group) {
  if (group.size() == 1) {
    return x;
  }
  return CopyToRegion::apply(x, address(group));
}

at::Tensor reduce_from_tensor_parallel_region(const at::Tensor& x, const TensorParallel& group) {
  if (group.size() == 1) {
    return x;
  }
  return ReduceFromRegion::apply(x, address(group));
}

ShardedRngScope::ShardedRngScope(const TensorParallel& group, const c10::Device& device)
    : sharded_(group.size() > 1 ? group.sharded_generator(device) : at::Generator()) {
  if (!sharded_.defined()) {
    return;
  }
  default_ = at::globalContext().defaultGenerator(device);
  const std::scoped_lock lock(default_.mutex(), sharded_.mutex());
  saved_ = default_.get_state();
  default_.set_state(sharded_.get_state());
}

ShardedRngScope::~ShardedRngScope() {
  if (!sharded_.defined()) {
    return;
  }
  const std::scoped_lock lock(default_.mutex(), sharded_.mutex());
  sharded_.set_state(default_.get_state());  // what the scope drew advanced it
  default_.set_state(saved_);
}

}  // namespace mlagpt::model
