// FlatAdamW: AdamW over flat float32 buffers, replicated or with its state sharded over data-parallel ranks (ZeRO-1).
//
// The constructor moves every parameter into its group's flat buffer (FlatLayout) and makes the parameter a view of
// it, and likewise its gradient: backward accumulates in place into the flat gradient buffer (AccumulateGrad adds
// into a defined gradient), so a bucket of gradients is one contiguous tensor to reduce and the update is one
// at::_fused_adamw_ call per group, on CUDA and on the CPU. zero_grad() zeroes the buffers; gradients are never
// set to none (that would detach them from the buffer; GradReducer checks).
//
// Replicated (zero = false): every rank holds exp_avg and exp_avg_sq for every element and updates all of them.
// ZeRO-1 (zero = true): rank s of `shards` holds the state of shard s of every bucket only (1/shards of it, plus
// padding). The gradient reduction reduce-scatters each bucket into shard_grads(b) (GradReducer), step() updates
// the rank's shards of the parameters, and all-gathers the updated shards into every rank's parameters.
//
// The update is decoupled AdamW as torch.optim.AdamW computes it, at the learning rate step() is given, with bias
// correction from the step count. Clipping and skipping stay on the device: step() multiplies the gradients by
// `clip_coef` (a device scalar) and is a no-op, step count included, where `found_inf` (a device scalar) is 1.
//
// Only float32 parameters: mixed precision is autocast's (the parameters are the float32 master weights).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "launch/communicator.h"
#include "trainer/parallel/flat_layout.h"

namespace mlagpt::trainer {

struct NamedParameter {
  std::string name;
  at::Tensor tensor;  // a leaf that requires grad, float32
  bool decay = true;
  // Under tensor parallelism (model::ParameterSplit): whether this rank counts the parameter in grad_square_sum()
  // (false for a replica whose gradient another rank of the tensor-parallel group counts: the global norm counts
  // every element once), and whether GradReducer sums its gradient over the tensor-parallel group first (a
  // replicated parameter whose gradient is each rank's share only).
  bool in_grad_norm = true;
  bool sum_over_tensor_parallel = false;
};

struct AdamWSettings {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // for the decay group; the other group gets none
};

struct FlatOptions {
  int64_t bucket_bytes = 25 << 20;
  bool zero = false;  // shard the state over `comm` (ZeRO-1)
};

// One parameter's flat range [begin, end) as this rank holds it: 1-D views of its value and its moments.
struct StateSlice {
  int param = 0;  // index into layout().params
  int64_t begin = 0;
  int64_t end = 0;
  at::Tensor value;
  at::Tensor exp_avg;
  at::Tensor exp_avg_sq;
};

class FlatAdamW {
 public:
  // `comm` is the data-parallel group; its size is the number of shards of every bucket, whether or not the state is
  // sharded (so a checkpoint's slices are the same with and without ZeRO-1).
  FlatAdamW(std::vector<NamedParameter> parameters, const AdamWSettings& settings, const FlatOptions& options,
            launch::Communicator& comm);
  FlatAdamW(const FlatAdamW&) = delete;
  FlatAdamW& operator=(const FlatAdamW&) = delete;

  const FlatLayout& layout() const { return layout_; }
  bool zero() const { return options_.zero; }
  launch::Communicator& comm() { return comm_; }
  const std::vector<NamedParameter>& parameters() const { return parameters_; }

  void zero_grad();
  // The gradients of bucket `b` (a view of the flat buffer).
  at::Tensor bucket_grads(int b) const;
  at::Tensor bucket_params(int b) const;
  // ZeRO-1: where the reduce-scatter of bucket `b` puts this rank's shard of the summed gradients.
  at::Tensor shard_grads(int b) const;

  // The sum of squares of the gradients this rank updates (its shards with ZeRO-1, everything otherwise), leaving
  // out the parameters with in_grad_norm = false, as a float64 scalar on the device.
  at::Tensor grad_square_sum() const;

  // One AdamW update at `lr`; see the top of the file for clip_coef and found_inf (float32 device scalars).
  void step(double lr, const std::optional<at::Tensor>& clip_coef, const at::Tensor& found_inf);

  // The slices of the state this rank holds (everything, or its shards), and the slices it writes in a checkpoint:
  // its shard of every bucket in both modes, so that the ranks together write every element once.
  std::vector<StateSlice> held_slices();
  std::vector<StateSlice> written_slices();

  // Updates done (skipped steps not counted). Reads the device.
  int64_t step_count() const;
  void set_step_count(int64_t steps);
  // Bytes of exp_avg and exp_avg_sq on this rank.
  int64_t state_bytes() const;

 private:
  // The tensors one _fused_adamw_ call of group g takes.
  struct GroupState {
    std::vector<at::Tensor> params;
    std::vector<at::Tensor> grads;
    std::vector<at::Tensor> exp_avg;
    std::vector<at::Tensor> exp_avg_sq;
  };
  std::vector<StateSlice> slices(bool only_own_shard);
  // The gradients grad_square_sum() sums: the updated ones, or views of them over the counted parameters only.
  std::vector<at::Tensor> norm_gradients() const;

  std::vector<NamedParameter> parameters_;
  AdamWSettings settings_;
  FlatOptions options_;
  launch::Communicator& comm_;
  FlatLayout layout_;
  std::vector<at::Tensor> params_;       // per group
  std::vector<at::Tensor> grads_;        // per group
  std::vector<at::Tensor> shard_grads_;  // per bucket (ZeRO-1)
  std::vector<GroupState> state_;        // per group
  std::vector<at::Tensor> norm_grads_;   // what grad_square_sum() sums: views of the updated gradients
  at::Tensor steps_;                     // float32 scalar on the device
};

}  // namespace mlagpt::trainer
