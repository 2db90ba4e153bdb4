#include "launch/watched_communicator.h"

#include <utility>

namespace mlagpt::launch {
namespace {

// The Work of a watched async collective that completes on the host (MPI, local): completes the record when the
// wrapped Work is seen complete.
class WatchedWork final : public Work {
 public:
  WatchedWork(std::unique_ptr<Work> inner, CollectiveWatchdog& watchdog, uint64_t ticket)
      : inner_(std::move(inner)), watchdog_(watchdog), ticket_(ticket) {}
  WatchedWork(const WatchedWork&) = delete;
  WatchedWork& operator=(const WatchedWork&) = delete;
  // The wrapped Work's destructor waits for an unfinished MPI collective; after it, the collective is over.
  ~WatchedWork() override {
    inner_.reset();
    watchdog_.completed(ticket_);
  }

  void wait() override {
    inner_->wait();
    watchdog_.completed(ticket_);
  }
  bool test() override {
    const bool done = inner_->test();
    if (done) {
      watchdog_.completed(ticket_);
    }
    return done;
  }

 private:
  std::unique_ptr<Work> inner_;
  CollectiveWatchdog& watchdog_;
  uint64_t ticket_;
};

int64_t bytes_of(const at::Tensor& tensor) {
  return tensor.defined() ? static_cast<int64_t>(tensor.nbytes()) : 0;
}

}  // namespace

WatchedCommunicator::WatchedCommunicator(std::unique_ptr<Communicator> inner, std::string group,
                                         CollectiveWatchdog& watchdog)
    : inner_(std::move(inner)), group_(std::move(group)), watchdog_(watchdog) {
  watchdog_.watch(inner_.get(), group_);
}

WatchedCommunicator::~WatchedCommunicator() {
  watchdog_.unwatch(inner_.get());
}

bool WatchedCommunicator::attach_device_probe(uint64_t ticket) {
  std::function<bool()> done = inner_->last_collective_done();
  if (!done) {
    return false;
  }
  watchdog_.attach(ticket, std::move(done));
  return true;
}

void WatchedCommunicator::blocking(const char* op, int64_t bytes, const std::function<void()>& call) {
  const uint64_t ticket = watchdog_.issued(group_, inner_->size(), ++seq_, op, bytes);
  try {
    call();
  } catch (...) {
    watchdog_.completed(ticket);
    throw;
  }
  if (!attach_device_probe(ticket)) {
    watchdog_.completed(ticket);
  }
}

std::unique_ptr<Work> WatchedCommunicator::async(const char* op, int64_t bytes,
                                                 const std::function<std::unique_ptr<Work>()>& call) {
  const uint64_t ticket = watchdog_.issued(group_, inner_->size(), ++seq_, op, bytes);
  std::unique_ptr<Work> work;
  try {
    work = call();
  } catch (...) {
    watchdog_.completed(ticket);
    throw;
  }
  if (attach_device_probe(ticket)) {  // NCCL: its event, not wait(), completes the record
    return work;
  }
  return std::make_unique<WatchedWork>(std::move(work), watchdog_, ticket);
}

void WatchedCommunicator::all_reduce(at::Tensor& tensor, ReduceOp op) {
  blocking("all_reduce", bytes_of(tensor), [&] { inner_->all_reduce(tensor, op); });
}

void WatchedCommunicator::broadcast(at::Tensor& tensor, int root) {
  blocking("broadcast", bytes_of(tensor), [&] { inner_->broadcast(tensor, root); });
}

void WatchedCommunicator::all_gather(const at::Tensor& input, at::Tensor& output) {
  blocking("all_gather", bytes_of(output), [&] { inner_->all_gather(input, output); });
}

void WatchedCommunicator::reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) {
  blocking("reduce_scatter", bytes_of(input), [&] { inner_->reduce_scatter(input, output, op); });
}

void WatchedCommunicator::barrier() {
  blocking("barrier", 0, [&] { inner_->barrier(); });
}

std::unique_ptr<Work> WatchedCommunicator::all_reduce_async(at::Tensor& tensor, ReduceOp op) {
  return async("all_reduce_async", bytes_of(tensor), [&] { return inner_->all_reduce_async(tensor, op); });
}

std::unique_ptr<Work> WatchedCommunicator::reduce_scatter_async(const at::Tensor& input, at::Tensor& output,
                                                                ReduceOp op) {
  return async("reduce_scatter_async", bytes_of(input),
               [&] { return inner_->reduce_scatter_async(input, output, op); });
}

std::unique_ptr<Work> WatchedCommunicator::all_gather_async(const at::Tensor& input, at::Tensor& output) {
  return async("all_gather_async", bytes_of(output), [&] { return inner_->all_gather_async(input, output); });
}

}  // namespace mlagpt::launch
