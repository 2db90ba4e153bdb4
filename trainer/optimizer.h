// The optimizer and its learning-rate schedule.
//
// AdamW is LibTorch's (torch::optim::AdamW, decoupled weight decay), over two parameter groups: matrices of the
// linear layers decay; norms, biases and the embedding tables (wte, wpe) do not. lm_head, when untied, is a linear
// layer and decays. The schedule is nanoGPT's: linear warmup to optim.lr over warmup_steps (step s, counted from 0,
// gets lr * (s + 1) / warmup_steps), then cosine decay to min_lr at decay_steps, then min_lr. The PyTorch parity
// test (tests/reference/train_reference.py) implements the same rules independently.
#pragma once

#include <torch/optim/adamw.h>

#include <memory>
#include <string>
#include <vector>

#include "model/gpt.h"
#include "trainer/train_config.h"

namespace mlagpt::trainer {

// True for parameters that get weight decay (see above).
bool decays(const std::string& name, const at::Tensor& parameter);

std::unique_ptr<torch::optim::AdamW> make_adamw(model::Gpt& model, const OptimConfig& config);

// The learning rate of optimizer step `step` (0-based).
double learning_rate(int64_t step, const OptimConfig& optim, const ScheduleConfig& schedule, int64_t decay_steps);

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

}  // namespace mlagpt::trainer
