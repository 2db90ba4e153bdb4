// GradReducer: sums the flat gradient buckets of a FlatAdamW over the data-parallel group while backward runs.
//
// A post-accumulate-grad hook on every parameter counts the gradients of the backward pass it was armed for (the
// last micro-batch's: the others accumulate locally and send nothing). When a bucket's last gradient arrives the
// bucket is ready, and ready buckets start their reduction in bucket order, so every rank issues the same
// collectives in the same order whatever order its gradients come in (PyTorch DDP's rule): an all-reduce of the
// bucket, or with ZeRO-1 a reduce-scatter into the rank's shard. Each hook also tests the reductions in flight,
// which is what makes MPI progress while backward computes on the CPU. `overlap = false` starts every bucket after
// backward instead (the baseline the overlap is measured against).
//
// The collective sums. Averaging is the caller's: it scales the loss by 1 / (micro-batches x data-parallel ranks)
// before backward (exact for power-of-two rank counts, so the result equals summing and dividing).
//
// finish() starts the buckets still waiting, because a parameter got no gradient on this rank (every rank must
// still issue every collective, or the others would hang), waits for all of them, and returns the parameters that
// got no gradient here; the caller makes the ranks agree on that and stops with an error. A gradient that autograd
// replaced instead of accumulating into the flat buffer (someone set it to none) is an Error at once.
//
// Under tensor parallelism, a parameter with sum_over_tensor_parallel (a replicated parameter whose gradient is only
// this rank's share of it) has its accumulated gradient summed over the tensor-parallel group in the armed backward
// before it counts as arrived for its bucket. These sums are blocking collectives of the group, issued in one fixed
// order on every rank (reverse registration order, the order backward mostly produces gradients in): a parameter's
// sum waits until every parameter before it in that order has arrived, whatever order autograd delivers them in, and
// finish() issues the sums still due (gradients this rank did not get) before it starts the buckets left.
//
// Threading: the hooks run on the thread that runs backward (the caller's on the CPU).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "launch/communicator.h"
#include "model/tensor_parallel.h"
#include "trainer/parallel/flat_adamw.h"

namespace mlagpt::trainer {

class GradReducer {
 public:
  // `tensor_parallel`: the group the sum_over_tensor_parallel gradients are summed over (the model's); it must
  // outlive the reducer.
  GradReducer(FlatAdamW& optimizer, bool overlap,
              const model::TensorParallel& tensor_parallel = model::single_device());
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // The next backward produces the final gradients of this step: count them and reduce the buckets as they fill.
  void arm();
  // Starts what is left, waits for every reduction, disarms; returns the names of the parameters that got no
  // gradient in the armed backward.
  std::vector<std::string> finish();

  // Buckets whose reduction had started before backward ended, in the last step.
  int64_t started_during_backward() const { return started_in_backward_; }
  // Host seconds the last finish() took: the communication left exposed after backward where the host waits for it
  // (MPI); about 0 with NCCL, whose waits only order streams.
  double last_finish_seconds() const { return finish_seconds_; }

 private:
  class Hook;
  void on_gradient(int param);
  // Sums over the tensor-parallel group the gradients due in tp_order_ that have arrived (all that are due when
  // `all`), counting each as arrived for its bucket.
  void sum_over_tensor_parallel(bool all);
  void count_for_bucket(int param);
  void start_ready_buckets();
  void start(int bucket);

  FlatAdamW& optimizer_;
  bool overlap_;
  const model::TensorParallel& tensor_parallel_;
  std::vector<int> tp_order_;  // the parameters summed over the tensor-parallel group, in the order of their sums
  size_t next_tp_ = 0;         // the next of them to sum
  bool armed_ = false;
  std::vector<char> arrived_;                         // per parameter, in the armed backward
  std::vector<int64_t> pending_;                      // per bucket: gradients still to come
  std::vector<std::unique_ptr<launch::Work>> works_;  // per bucket, once started
  int next_ = 0;                                      // the next bucket to start
  int64_t started_in_backward_ = 0;
  double finish_seconds_ = 0;
  std::vector<const void*> grad_data_;  // where each parameter's gradient must stay
};

}  // namespace mlagpt::trainer
