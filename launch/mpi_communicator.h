// MpiCommunicator: the Communicator over an MPI communicator, for CPU tensors.
//
// Owns a duplicate of the communicator it is given (so its traffic never mixes with anyone else's) with
// MPI_ERRORS_RETURN set, so failures surface as mlagpt::MpiError. Half and bfloat16 tensors are reduced through a
// float32 copy, since MPI has no such types. Not thread-safe: one thread calls the collectives.
//
// The *_async collectives are MPI's non-blocking ones (MPI_Iallreduce, MPI_Ireduce_scatter_block, MPI_Iallgather).
// Open MPI progresses them only inside MPI calls, so a caller that computes meanwhile calls test() on its works
// from time to time (tests/bench/mpi_overlap_bench.cpp measures how much that hides). A Work must be waited on,
// tested to completion or destroyed before MPI_Finalize; destroying an unfinished one waits for it.
#pragma once

#include <mpi.h>

#include "launch/communicator.h"

namespace mlagpt::launch {

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  MPI_Comm comm() const { return comm_; }

  void all_reduce(at::Tensor& tensor, ReduceOp op) override;
  void broadcast(at::Tensor& tensor, int root) override;
  void all_gather(const at::Tensor& input, at::Tensor& output) override;
  void reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) override;
  void barrier() override;

  std::unique_ptr<Work> all_reduce_async(at::Tensor& tensor, ReduceOp op) override;
  std::unique_ptr<Work> reduce_scatter_async(const at::Tensor& input, at::Tensor& output, ReduceOp op) override;
  std::unique_ptr<Work> all_gather_async(const at::Tensor& input, at::Tensor& output) override;

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace mlagpt::launch
