// NcclCommunicator: the Communicator for CUDA tensors, over NCCL (built only with MLAGPT_WITH_CUDA).
//
// The NCCL unique id is created by rank 0 and broadcast over the MPI communicator given (or created locally for a
// group of one). Collectives are enqueued on the current CUDA stream of the tensor's device, so they are ordered
// with the kernels around them and do not block the host; barrier() synchronizes that stream.
#pragma once

#include <mpi.h>

#include "launch/communicator.h"

namespace mlagpt::launch {

class NcclCommunicator final : public Communicator {
 public:
  // `mpi_comm` = MPI_COMM_NULL makes a group of one (no MPI needed). `device` is this rank's CUDA device index.
  NcclCommunicator(MPI_Comm mpi_comm, int device);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  void all_reduce(at::Tensor& tensor, ReduceOp op) override;
  void broadcast(at::Tensor& tensor, int root) override;
  void all_gather(const at::Tensor& input, at::Tensor& output) override;
  void reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) override;
  void barrier() override;

  // Aborts outstanding NCCL work (for main()'s error path, where a peer may be gone).
  void abort();

 private:
  void* comm_ = nullptr;  // ncclComm_t, kept opaque so this header needs no nccl.h
  int rank_ = 0;
  int size_ = 1;
  int device_ = 0;
};

}  // namespace mlagpt::launch
