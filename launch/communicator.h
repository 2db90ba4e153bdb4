// Communicator: the collectives the trainer needs, independent of the transport.
//
// Three backends implement it: LocalCommunicator (one process, every collective is the identity), MpiCommunicator
// (CPU tensors, over MPI; how the whole distributed path is tested on machines without a GPU) and
// NcclCommunicator (CUDA tensors, on the current CUDA stream of the tensor's device; built with MLAGPT_WITH_CUDA).
// Training code is written against this interface only. Collectives are in place and blocking from the host's
// point of view for MPI; NCCL ones are enqueued on the current stream and ordered with the work around them.
// Every rank of the group must call the same collectives in the same order with tensors of the same shape/dtype.
//
// The *_async collectives start the same operation and return a Work to wait on, so that communication runs while
// the caller computes (gradient buckets during backward). Until wait() returns, the tensors belong to the
// collective: the caller neither reads nor writes them (the Work keeps them alive). MPI starts a non-blocking
// collective, which test() and wait() drive; NCCL enqueues it on the communicator's own stream after the caller's
// current stream, and wait() makes the current stream wait for it (the host never blocks). Async and blocking
// collectives of one communicator run in the order they were issued. The base-class versions run the blocking
// collective and return a finished Work, which is what the local backend needs.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>

namespace mlagpt::launch {

enum class ReduceOp { kSum, kMax, kMin };

// A collective in flight.
class Work {
 public:
  virtual ~Work() = default;
  Work() = default;
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;
  // Returns once the results can be used by the caller: MPI when the operation has completed; NCCL once the
  // caller's current stream is ordered after it. A second call returns at once.
  virtual void wait() = 0;
  // Advances the operation without blocking and says whether it has completed (MPI_Test; for NCCL whether its
  // event has been reached). Calling it while computing is what lets MPI make progress without a thread.
  virtual bool test() = 0;
};

// A Work that was already complete when it was returned.
class CompletedWork final : public Work {
 public:
  void wait() override {}
  bool test() override { return true; }
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "local", "mpi" or "nccl".
  virtual std::string backend() const = 0;

  // Reduces `tensor` (contiguous) over the group; every rank receives the result in place.
  virtual void all_reduce(at::Tensor& tensor, ReduceOp op = ReduceOp::kSum) = 0;
  // Copies `tensor` of rank `root` into `tensor` on every rank.
  virtual void broadcast(at::Tensor& tensor, int root) = 0;
  // Gathers every rank's `input` (same shape everywhere) into `output`, whose first dimension is size() times
  // input's: rank r's tensor lands at output[r * n : (r + 1) * n] of the flattened storage.
  virtual void all_gather(const at::Tensor& input, at::Tensor& output) = 0;
  // Reduces every rank's `input` (size() equal chunks of the flattened storage) over the group; rank r receives
  // chunk r of the result in `output`, which holds input.numel() / size() elements of input's dtype. The inverse of
  // all_gather, and with it an all-reduce (how ZeRO shards gradient reduction).
  virtual void reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp op = ReduceOp::kSum) = 0;
  virtual void barrier() = 0;

  // The same collectives, started and returned as a Work (see the top of this file). Arguments are checked as the
  // blocking versions check them, before anything starts.
  virtual std::unique_ptr<Work> all_reduce_async(at::Tensor& tensor, ReduceOp op = ReduceOp::kSum);
  virtual std::unique_ptr<Work> reduce_scatter_async(const at::Tensor& input, at::Tensor& output,
                                                     ReduceOp op = ReduceOp::kSum);
  virtual std::unique_ptr<Work> all_gather_async(const at::Tensor& input, at::Tensor& output);

  // For the collective watchdog (launch/watchdog.h), which calls the last two from its own thread.
  // A function saying, from any thread, whether the collective issued last (blocking or async) has finished on its
  // device; empty where a collective has finished once its blocking call, or its Work's wait(), has returned (MPI,
  // local). NCCL's returns at once while the GPU may still be in the collective, so only this can tell.
  virtual std::function<bool()> last_collective_done() const { return {}; }
  // An error the backend met outside any call (NCCL's asynchronous errors: a peer gone, a network failure), or "".
  virtual std::string async_error() const { return {}; }
  // Aborts the communicator's outstanding work so that nothing stays blocked in it (ncclCommAbort); the process is
  // about to end. No-op where a blocked call cannot be released this way (MPI: MPI_Abort ends the job instead).
  virtual void abort() {}
};

// The world-size-1 backend: rank 0 of 1; collectives leave tensors as they are (after checking them).
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "local"; }
  void all_reduce(at::Tensor& tensor, ReduceOp op) override;
  void broadcast(at::Tensor& tensor, int root) override;
  void all_gather(const at::Tensor& input, at::Tensor& output) override;
  void reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) override;
  void barrier() override {}
};

// Throws mlagpt::Error unless `tensor` is defined and contiguous; `what` names the caller in the message.
void check_collective_tensor(const at::Tensor& tensor, const char* what);

// Throws mlagpt::Error unless `output` can receive one of `ranks` equal chunks of `input` (same dtype, numel a
// ranks-th of input's).
void check_reduce_scatter_shapes(const at::Tensor& input, const at::Tensor& output, int ranks);

}  // namespace mlagpt::launch
