// One optimizer step: grad_accum micro-batches of forward and backward of model.loss (bfloat16 autocast on the
// model's device, CUDA or CPU, when run.dtype asks for it; float32 master weights), the gradient reduction over the
// data-parallel group (GradReducer: flat buckets reduced while the last micro-batch's backward runs, after the
// tensor-parallel sums of the gradients that need them), clipping by the global norm, and the AdamW update at the
// step's learning rate (FlatAdamW, replicated or ZeRO-1).
//
// Nothing in a step waits for the device: the loss, the gradient norm and whether the step was skipped stay on the
// device in a StepReport, which the Trainer reads when it logs (read_step_reports: one copy to the host for all the
// steps since the last read). All the ranks of the world agree on everything a step decides in one small
// all-reduce over the data-parallel group and one over the model's tensor-parallel group, run every step anyway: the
// loss (counted by rank 0 of each tensor-parallel group, whose ranks all have it), the squared gradient norm (each
// element counted once: over data-parallel ranks the owner of the shard with ZeRO-1, rank 0's full copy otherwise;
// over tensor-parallel ranks every rank's split parameters and rank 0's replicas, NamedParameter::in_grad_norm), the
// number of parameters that got no gradient on some rank, and which stop signals the ranks have received. A
// non-finite loss or gradient norm skips the update on every rank together (on the device: the optimizer's
// found_inf).
//
// Threading: the caller's thread. Collectives go through the Communicator (the local one on a single process).
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "launch/communicator.h"
#include "model/gpt.h"
#include "trainer/parallel/flat_adamw.h"
#include "trainer/parallel/grad_reducer.h"
#include "trainer/train_config.h"

namespace mlagpt::trainer {

struct MicroBatch {
  at::Tensor x;  // [B, T] int64, on the model's device
  at::Tensor y;  // [B, T] int64
};

// What a step leaves on the device.
struct StepReport {
  at::Tensor values;  // float64 [kStepReportSize] on the model's device; see read_step_reports
  double learning_rate = 0;
  std::vector<std::string> missing_here;  // parameters that got no gradient on this rank
};

// A step as the host sees it.
struct StepResult {
  double loss = 0;       // mean over micro-batches and data-parallel ranks
  double grad_norm = 0;  // global norm before clipping
  double learning_rate = 0;
  bool finite = true;   // false: the update was skipped
  int stop_signal = 0;  // the largest stop signal any rank had received by the end of the step (0: none)
};

// Copies the reports to the host (one synchronization) and turns them into results. Throws mlagpt::Error on every
// rank when a parameter got no gradient on some rank in one of the steps (the ranks' buckets disagree), naming the
// parameters this rank missed.
std::vector<StepResult> read_step_reports(const std::vector<StepReport>& reports);

// How many times read_step_reports has run in this process (for tests that count host synchronizations).
int64_t step_report_reads();

// The signals a StepReport counts (the ones launch::StopSignals turns into a stop request).
const std::vector<int>& reported_stop_signals();

class TrainStep {
 public:
  // `data_parallel` is the optimizer's group; the tensor-parallel group is the model's.
  TrainStep(model::Gpt& model, FlatAdamW& optimizer, GradReducer& reducer, const TrainConfig& config,
            launch::Communicator& data_parallel);
  // Runs optimizer step `step` (0-based), drawing grad_accum micro-batches from `next_batch`. `stop_signal`, asked
  // after backward, says which signal this rank has received (0: none); the report says which ones any rank had.
  StepReport run(
      int64_t step, const std::function<MicroBatch()>& next_batch,
      const std::function<int()>& stop_signal = [] { return 0; });

 private:
  model::Gpt& model_;
  FlatAdamW& optimizer_;
  GradReducer& reducer_;
  const TrainConfig& config_;
  launch::Communicator& data_parallel_;
  bool autocast_bf16_;
  c10::Device device_;
};

}  // namespace mlagpt::trainer
