// TensorParallelGroup: the model's tensor-parallel context (model/tensor_parallel.h) over a Communicator, the TP
// group of the ProcessMesh (launch/process_mesh.h). The model sees only rank, size and a sum; this is where the sum
// becomes a collective.
//
// The group owns the generators of the draws on split activations (sharded_generator): one for the CPU and, when the
// group's device is a CUDA device, one for that device. The Trainer seeds them every step with seed_sharded(), from
// a seed that differs between the ranks of the group, while it seeds the default generators the same on every rank
// of the group (Megatron's model-parallel RNG tracker). A group of one has no sharded generator: its draws all come
// from the default generator, as they did before tensor parallelism.
//
// Threading: the generators are used under their own mutexes (ShardedRngScope, seed_sharded); the rest is the
// Communicator's.
#pragma once

#include <ATen/core/Generator.h>
#include <c10/core/Device.h>

#include <cstdint>

#include "launch/communicator.h"
#include "model/tensor_parallel.h"

namespace mlagpt::trainer {

class TensorParallelGroup final : public model::TensorParallel {
 public:
  // `device`: the model's device (CUDA gets a generator of its own next to the CPU's). `comm` must outlive the group.
  explicit TensorParallelGroup(launch::Communicator& comm, const c10::Device& device = c10::Device(c10::kCPU));
  int64_t rank() const override { return comm_.rank(); }
  int64_t size() const override { return comm_.size(); }
  void all_reduce_sum(at::Tensor& tensor) const override { comm_.all_reduce(tensor, launch::ReduceOp::kSum); }
  void all_reduce_max(at::Tensor& tensor) const override { comm_.all_reduce(tensor, launch::ReduceOp::kMax); }
  // The group's generator for `device`'s type; undefined for a group of one. Throws mlagpt::Error for a device the
  // group was not made for (another CUDA device, or CUDA when the group's device is the CPU).
  at::Generator sharded_generator(const c10::Device& device) const override;

  // Seeds every sharded generator with `seed` (and resets CUDA's offset): the caller passes a seed that differs
  // between the ranks of the group. A no-op for a group of one.
  void seed_sharded(uint64_t seed);

 private:
  launch::Communicator& comm_;
  c10::Device device_;
  at::Generator cpu_;
  at::Generator cuda_;  // undefined unless device_ is CUDA
};

}  // namespace mlagpt::trainer
