// TensorParallel: what a layer split over a tensor-parallel group needs to know of it, without the model knowing
// how ranks talk (model/ never includes MPI or NCCL): the group's rank and size, a sum and a maximum over it, and a
// generator for random draws on split activations. The trainer implements it over a Communicator
// (trainer/parallel/tensor_parallel_group.h); single_device() is the group of one, for which every function below
// is the identity.
//
// The two region functions are Megatron-LM's, as autograd functions:
//   copy_to_tensor_parallel_region(x)     forward: x (every rank holds the same x);  backward: the gradient summed
//                                         over the group (each rank's part of the computation contributed to it)
//   reduce_from_tensor_parallel_region(x) forward: x summed over the group;          backward: the gradient as is
// A column-parallel layer reads its input through the first, a row-parallel layer sums its partial outputs through
// the second, so a column-parallel layer followed by a row-parallel one communicates once each way.
//
// Every rank of the group must call them in the same order with tensors of the same shape (they are collectives).
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>

namespace mlagpt::model {

class TensorParallel {
 public:
  virtual ~TensorParallel() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t size() const = 0;
  // Sums `tensor` (contiguous) over the group in place: every rank receives the sum.
  virtual void all_reduce_sum(at::Tensor& tensor) const = 0;
  // The elementwise maximum over the group, in place.
  virtual void all_reduce_max(at::Tensor& tensor) const = 0;
  // The generator that draws for activations split over the group (the dropout of this rank's attention heads):
  // seeded differently on every rank of the group, while the default generator, which draws for the activations
  // every rank holds whole (residual and embedding dropout), is seeded the same on every rank of the group
  // (Megatron's model-parallel RNG tracker). Undefined: those draws use the default generator too (one device).
  virtual at::Generator sharded_generator(const c10::Device& /*device*/) const { return {}; }
};

// The tensor-parallel group of one device: rank 0 of 1, sums are the identity.
const TensorParallel& single_device();

at::Tensor copy_to_tensor_parallel_region(const at::Tensor& x, const TensorParallel& group);
at::Tensor reduce_from_tensor_parallel_region(const at::Tensor& x, const TensorParallel& group);

// How a parameter is laid out over the tensor-parallel group.
struct ParameterSplit {
  // The dimension cut into size() equal contiguous chunks, rank r holding chunk r; -1: replicated, every rank holds
  // the whole tensor.
  int64_t dim = -1;
  // Replicated, and each rank's gradient is only its own heads' share of it (MLA's down-projections, a KV
  // projection shared by heads on several ranks): the gradient must be summed over the group after backward. Other
  // replicated parameters get the whole gradient on every rank already (their output's gradient was summed by
  // copy_to_tensor_parallel_region downstream).
  bool sum_gradient = false;
  bool split() const { return dim >= 0; }
};

// While alive, draws from the default generator of `device` come from group.sharded_generator(device) (whose state
// advances), and the default generator's own state is put back at the end. A no-op for a group of one (whose
// draws are the same as before tensor parallelism existed) or one without a sharded generator. Not reentrant; one scope
// at a time per device.
class ShardedRngScope {
 public:
  ShardedRngScope(const TensorParallel& group, const c10::Device& device);
  ~ShardedRngScope();
  ShardedRngScope(const ShardedRngScope&) = delete;
  ShardedRngScope& operator=(const ShardedRngScope&) = delete;

 private:
  at::Generator sharded_;
  at::Generator default_;
  at::Tensor saved_;  // the default generator's state on entry
};

}  // namespace mlagpt::model
