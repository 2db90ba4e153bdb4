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
// Threading: the hooks run on the thread that runs backward (the caller's on the CPU).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "launch/communicator.h"
#include "trainer/parallel/flat_adamw.h"

namespace mlagpt::trainer {

class GradReducer {
 public:
  GradReducer(FlatAdamW& optimizer, bool overlap);
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
  void start_ready_buckets();
  void start(int bucket);

  FlatAdamW& optimizer_;
  bool overlap_;
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
