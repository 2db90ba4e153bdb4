// NcclCommunicator: the Communicator for CUDA tensors, over NCCL (built only with MLAGPT_WITH_CUDA).
//
// The NCCL unique id is created by rank 0 and broadcast over the MPI communicator given (or created locally for a
// group of one). Every NCCL call of a communicator runs on its own communication stream (a high-priority stream of
// its device), so that all ranks see one communicator's collectives in one order on the GPU. A blocking collective
// is ordered after the caller's current stream and the current stream after it (events; the host does not block).
// An async one makes the comm stream wait for the current stream, enqueues the collective there, and returns a Work
// whose wait() makes the then-current stream wait for it; test() asks whether it has finished. The tensors are
// recorded on the comm stream for the caching allocator and held by the Work, so freeing them early is safe.
// barrier() synchronizes the host with the comm stream. Tensors must be on the communicator's device. For the
// watchdog, the event after each collective is kept (last_collective_done()) and NCCL's asynchronous errors are
// reported by async_error().
#pragma once

#include <c10/core/Stream.h>
#include <mpi.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>

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

  std::unique_ptr<Work> all_reduce_async(at::Tensor& tensor, ReduceOp op) override;
  std::unique_ptr<Work> reduce_scatter_async(const at::Tensor& input, at::Tensor& output, ReduceOp op) override;
  std::unique_ptr<Work> all_gather_async(const at::Tensor& input, at::Tensor& output) override;

  // The event recorded on the comm stream after the last collective (queried from the watchdog's thread).
  std::function<bool()> last_collective_done() const override;
  // ncclCommGetAsyncError's error, with NCCL's last message; "" while there is none.
  std::string async_error() const override;
  // ncclCommAbort: ends outstanding NCCL work (the watchdog's and main()'s error path, where a peer may be gone).
  // Callable from another thread; the communicator is unusable afterwards.
  void abort() override;

 private:
  void* comm_ = nullptr;  // ncclComm_t, kept opaque so this header needs no nccl.h
  std::atomic<bool> aborted_{false};
  std::shared_ptr<void> last_done_;  // the Event after the last collective, shared with its probes and Works
  int rank_ = 0;
  int size_ = 1;
  int device_ = 0;
  c10::Stream comm_stream_;  // a c10::cuda::CUDAStream, kept generic so this header needs no CUDA headers
};

}  // namespace mlagpt::launch
