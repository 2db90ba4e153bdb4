// TensorParallel: what a layer split over a tensor-parallel group needs to know of it, without the model knowing
// how ranks talk (model/ never includes MPI or NCCL): the group's rank and size and a sum over it. The trainer
// implements it over a Communicator (trainer/parallel/tensor_parallel_group.h); single_device() is the group of
// one, for which every function below is the identity.
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

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace mlagpt::model {

class TensorParallel {
 public:
  virtual ~TensorParallel() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t size() const = 0;
  // Sums `tensor` (contiguous) over the group in place: every rank receives the sum.
  virtual void all_reduce_sum(at::Tensor& tensor) const = 0;
};

// The tensor-parallel group of one device: rank 0 of 1, sums are the identity.
const TensorParallel& single_device();

at::Tensor copy_to_tensor_parallel_region(const at::Tensor& x, const TensorParallel& group);
at::Tensor reduce_from_tensor_parallel_region(const at::Tensor& x, const TensorParallel& group);

}  // namespace mlagpt::model
