// One optimizer step: grad_accum micro-batches of forward and backward (bfloat16 autocast on the model's device,
// CUDA or CPU, when run.dtype asks for it; float32 master weights), the data-parallel gradient average, clipping by
// global norm, and the AdamW update at the step's learning rate. A non-finite loss or gradient norm skips the update
// (gradients are dropped) and says so in the result; counting and stopping is the Trainer's business.
//
// Threading: the caller's thread. Collectives go through the Communicator (the local one on a single process),
// so the same code runs on one CPU and on many GPUs.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/optim/adamw.h>

#include <functional>
#include <utility>

#include "launch/communicator.h"
#include "model/gpt.h"
#include "trainer/train_config.h"

namespace mlagpt::trainer {

struct MicroBatch {
  at::Tensor x;  // [B, T] int64, on the model's device
  at::Tensor y;  // [B, T] int64
};

struct StepResult {
  double loss = 0;       // mean over micro-batches and data-parallel ranks
  double grad_norm = 0;  // global norm before clipping
  double learning_rate = 0;
  bool finite = true;  // false: the update was skipped
};

// Averages gradients over the data-parallel group, one all-reduce per parameter (bucketing comes with the
// NCCL path, where it pays).
void average_gradients(model::Gpt& model, launch::Communicator& data_parallel);

class TrainStep {
 public:
  TrainStep(model::Gpt& model, torch::optim::AdamW& optimizer, const TrainConfig& config,
            launch::Communicator& data_parallel);
  // Runs optimizer step `step` (0-based), drawing grad_accum micro-batches from `next_batch`.
  StepResult run(int64_t step, const std::function<MicroBatch()>& next_batch);

 private:
  model::Gpt& model_;
  torch::optim::AdamW& optimizer_;
  const TrainConfig& config_;
  launch::Communicator& data_parallel_;
  std::vector<at::Tensor> parameters_;
  bool autocast_bf16_;
  c10::DeviceType device_type_;
};

}  // namespace mlagpt::trainer
