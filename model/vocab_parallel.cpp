#include "model/vocab_parallel.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/amax.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/log.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/autograd/custom_function.h>

#include "model/gpt.h"

namespace mlagpt::model {
namespace {

const TensorParallel& group_at(int64_t address) {
  return *reinterpret_cast<const TensorParallel*>(address);
}

// Which targets fall in [first, first + count), and their index among this rank's columns (0 elsewhere, so that
// gather stays in range).
struct LocalTargets {
  at::Tensor here;   // [N] bool
  at::Tensor index;  // [N] int64
};
LocalTargets local_targets(const at::Tensor& targets, int64_t first, int64_t count) {
  const at::Tensor here = (targets >= first) & (targets < first + count);
  return {here, at::where(here, targets - first, at::zeros_like(targets))};
}

struct VocabParallelCrossEntropy : public torch::autograd::Function<VocabParallelCrossEntropy> {
  // logits [N, V / tp] (float32 or float64), targets [N].
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& targets,
                            int64_t group_address) {
    const TensorParallel& group = group_at(group_address);
    const int64_t columns = logits.size(1);
    const LocalTargets local = local_targets(targets, group.rank() * columns, columns);

    at::Tensor max = logits.amax(1).contiguous();  // [N]
    group.all_reduce_max(max);
    const at::Tensor exp = at::exp(logits - max.unsqueeze(1));  // [N, V / tp]
    const at::Tensor target_logit =
        at::where(local.here, logits.gather(1, local.index.unsqueeze(1)).squeeze(1), 0.0);  // [N]
    at::Tensor sums = at::stack({exp.sum(1), target_logit}).contiguous();                   // [2, N]
    group.all_reduce_sum(sums);
    const at::Tensor sum_exp = sums[0];

    const at::Tensor counted = targets != kIgnoreIndex;  // [N]
    const at::Tensor count = counted.sum().to(logits.scalar_type());
    const at::Tensor per_position = at::where(counted, at::log(sum_exp) + max - sums[1], 0.0);  // [N]
    ctx->save_for_backward({exp / sum_exp.unsqueeze(1), local.here, local.index, counted, count});
    return per_position.sum() / count;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& softmax = saved[0];
    const at::Tensor& here = saved[1];
    const at::Tensor& index = saved[2];
    const at::Tensor& counted = saved[3];
    const at::Tensor& count = saved[4];
    // d loss / d logit = (softmax - one_hot(target)) / count for counted positions, 0 for ignored ones.
    at::Tensor grad = softmax.clone();
    grad.scatter_add_(1, index.unsqueeze(1), -here.to(grad.scalar_type()).unsqueeze(1));
    grad.mul_((counted.to(grad.scalar_type()) / count).unsqueeze(1) * grads[0]);
    return {grad, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor vocab_parallel_embedding(const at::Tensor& weight, const at::Tensor& idx, const TensorParallel& group) {
  if (group.size() == 1) {
    return at::embedding(weight, idx);
  }
  const int64_t rows = weight.size(0);
  const LocalTargets local = local_targets(idx, group.rank() * rows, rows);
  const at::Tensor partial = at::embedding(weight, local.index) * local.here.unsqueeze(-1).to(weight.scalar_type());
  return reduce_from_tensor_parallel_region(partial, group);  // [B, T, d]
}

at::Tensor vocab_parallel_cross_entropy(const at::Tensor& logits, const at::Tensor& targets,
                                        const TensorParallel& group) {
  const int64_t columns = logits.size(-1);
  // Reduced-precision logits are upcast: the log-sum-exp over a large vocabulary needs float32.
  const at::Tensor wide = logits.scalar_type() == at::kDouble ? logits : logits.to(at::kFloat);
  return VocabParallelCrossEntropy::apply(wide.reshape({-1, columns}), targets.reshape({-1}),
                                          reinterpret_cast<int64_t>(&group));
}

}  // namespace mlagpt::model
