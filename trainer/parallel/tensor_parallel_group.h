// TensorParallelGroup: the model's tensor-parallel context (model/tensor_parallel.h) over a Communicator, the TP
// group of the ProcessMesh (launch/process_mesh.h). The model sees only rank, size and a sum; this is where the sum
// becomes a collective.
#pragma once

#include "launch/communicator.h"
#include "model/tensor_parallel.h"

namespace mlagpt::trainer {

class TensorParallelGroup final : public model::TensorParallel {
 public:
  explicit TensorParallelGroup(launch::Communicator& comm) : comm_(comm) {}
  int64_t rank() const override { return comm_.rank(); }
  int64_t size() const override { return comm_.size(); }
  void all_reduce_sum(at::Tensor& tensor) const override { comm_.all_reduce(tensor, launch::ReduceOp::kSum); }
  void all_reduce_max(at::Tensor& tensor) const override { comm_.all_reduce(tensor, launch::ReduceOp::kMax); }

 private:
  launch::Communicator& comm_;
};

}  // namespace mlagpt::trainer
