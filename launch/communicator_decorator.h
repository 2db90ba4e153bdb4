// CommunicatorDecorator: the base of the Communicators that wrap another and do something around each of its
// collectives: WatchedCommunicator (launch/watched_communicator.h) records them for the collective watchdog,
// MeteredCommunicator (launch/metered_communicator.h) counts them for the metrics. Every call passes through to the
// wrapped communicator; a subclass supplies blocking() and async(), which run the call they are given (it issues
// the collective on the wrapped communicator) with the collective's kind and bytes: the tensor reduced or
// broadcast, the gathered output, the reduce-scattered input.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "launch/communicator.h"

namespace mlagpt::launch {

enum class CollectiveKind { kAllReduce, kBroadcast, kAllGather, kReduceScatter, kBarrier };
inline constexpr int kCollectiveKinds = 5;
// "all_reduce", "broadcast", "all_gather", "reduce_scatter", "barrier"; with `async`, "all_reduce_async" and so on.
const char* to_string(CollectiveKind kind, bool async = false);

class CommunicatorDecorator : public Communicator {
 public:
  int rank() const final { return inner_->rank(); }
  int size() const final { return inner_->size(); }
  std::string backend() const final { return inner_->backend(); }

  void all_reduce(at::Tensor& tensor, ReduceOp op) final;
  void broadcast(at::Tensor& tensor, int root) final;
  void all_gather(const at::Tensor& input, at::Tensor& output) final;
  void reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) final;
  void barrier() final;

  std::unique_ptr<Work> all_reduce_async(at::Tensor& tensor, ReduceOp op) final;
  std::unique_ptr<Work> reduce_scatter_async(const at::Tensor& input, at::Tensor& output, ReduceOp op) final;
  std::unique_ptr<Work> all_gather_async(const at::Tensor& input, at::Tensor& output) final;

  std::function<bool()> last_collective_done() const final { return inner_->last_collective_done(); }
  std::string async_error() const final { return inner_->async_error(); }
  void abort() final { inner_->abort(); }

 protected:
  explicit CommunicatorDecorator(std::unique_ptr<Communicator> inner);
  Communicator& inner() const { return *inner_; }

  // Run `call`, a blocking collective of `kind` on `bytes`, or an async one whose Work it returns.
  virtual void blocking(CollectiveKind kind, int64_t bytes, const std::function<void()>& call) = 0;
  virtual std::unique_ptr<Work> async(CollectiveKind kind, int64_t bytes,
                                      const std::function<std::unique_ptr<Work>()>& call) = 0;

 private:
  std::unique_ptr<Communicator> inner_;
};

}  // namespace mlagpt::launch
