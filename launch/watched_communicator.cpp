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

}  // namespace

WatchedCommunicator::WatchedCommunicator(std::unique_ptr<Communicator> inner, std::string group,
                                         CollectiveWatchdog& watchdog)
    : CommunicatorDecorator(std::move(inner)), group_(std::move(group)), watchdog_(watchdog) {
  watchdog_.watch(&this->inner(), group_);
}

WatchedCommunicator::~WatchedCommunicator() {
  watchdog_.unwatch(&inner());
}

bool WatchedCommunicator::attach_device_probe(uint64_t ticket) {
  std::function<bool()> done = inner().last_collective_done();
  if (!done) {
    return false;
  }
  watchdog_.attach(ticket, std::move(done));
  return true;
}

void WatchedCommunicator::blocking(CollectiveKind kind, int64_t bytes, const std::function<void()>& call) {
  const uint64_t ticket = watchdog_.issued(group_, size(), ++seq_, to_string(kind), bytes);
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

std::unique_ptr<Work> WatchedCommunicator::async(CollectiveKind kind, int64_t bytes,
                                                 const std::function<std::unique_ptr<Work>()>& call) {
  const uint64_t ticket = watchdog_.issued(group_, size(), ++seq_, to_string(kind, /*async=*/true), bytes);
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

}  // namespace mlagpt::launch
