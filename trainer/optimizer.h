// The optimizer's parameters and its learning-rate schedule.
//
// AdamW (decoupled weight decay) is FlatAdamW (trainer/parallel/flat_adamw.h) over two parameter groups: matrices of
// the linear layers decay; norms, biases and the embedding tables (wte, wpe) do not. lm_head, when untied, is a
// linear layer and decays. The schedule is nanoGPT's: linear warmup to optim.lr over warmup_steps (step s, counted
// from 0, gets lr * (s + 1) / warmup_steps), then cosine decay to min_lr at decay_steps, then min_lr. The PyTorch
// parity test (tests/reference/train_reference.py) implements the same rules independently.
#pragma once

#include <string>
#include <vector>

#include "model/gpt.h"
#include "trainer/parallel/flat_adamw.h"
#include "trainer/train_config.h"

namespace mlagpt::trainer {

// True for parameters that get weight decay (see above).
bool decays(const std::string& name, const at::Tensor& parameter);

// The model's parameters in registration order, each with its group and, over a tensor-parallel group of more than
// one rank, what model.parameter_splits() implies for the norm and the gradient reduction: split parameters count
// in this rank's grad_square_sum, replicated ones on rank 0 of the group only; replicated ones with sum_gradient are
// summed over the group by GradReducer. Throws mlagpt::Error for a parameter the splits do not name.
std::vector<NamedParameter> adamw_parameters(model::Gpt& model);
AdamWSettings adamw_settings(const OptimConfig& config);

// The learning rate of optimizer step `step` (0-based).
double learning_rate(int64_t step, const OptimConfig& optim, const ScheduleConfig& schedule, int64_t decay_steps);

}  // namespace mlagpt::trainer
