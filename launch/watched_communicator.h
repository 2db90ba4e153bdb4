// WatchedCommunicator: a Communicator that records every collective of the one it wraps with a CollectiveWatchdog
// (launch/watchdog.h) and otherwise passes it through unchanged.
//
// Each collective gets the group's next sequence number (the same on every rank of the group, since all of them
// issue the same collectives in the same order) and is recorded before it starts. It is complete when the blocking
// call returns or the Work's wait() returns or test() says so (MPI, local), or, where the wrapped communicator can
// say (last_collective_done(): NCCL, whose calls return before the GPU has run them), when its device event is
// reached. A collective that throws is complete (the error propagates; nothing is left waiting on the watchdog's
// side). The wrapped communicator is watched for asynchronous errors and aborted on a failure for as long as this
// object lives.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "launch/communicator_decorator.h"
#include "launch/watchdog.h"

namespace mlagpt::launch {

class WatchedCommunicator final : public CommunicatorDecorator {
 public:
  // `group` names the group in reports ("dp", "tp"). `watchdog` must outlive this object.
  WatchedCommunicator(std::unique_ptr<Communicator> inner, std::string group, CollectiveWatchdog& watchdog);
  ~WatchedCommunicator() override;

  // The sequence number the next collective will get (from 1).
  uint64_t next_seq() const { return seq_ + 1; }

 private:
  // Record a collective (async ones as "all_reduce_async" and so on), run `call` (which issues it on the wrapped
  // communicator), and complete the record or hand it its probe.
  void blocking(CollectiveKind kind, int64_t bytes, const std::function<void()>& call) override;
  std::unique_ptr<Work> async(CollectiveKind kind, int64_t bytes,
                              const std::function<std::unique_ptr<Work>()>& call) override;
  // After the call that issued `ticket`'s collective returned: gives the record the wrapped communicator's device
  // probe for it, if it has one (NCCL). Returns whether it did; otherwise the caller completes the record.
  bool attach_device_probe(uint64_t ticket);

  std::string group_;
  CollectiveWatchdog& watchdog_;
  uint64_t seq_ = 0;
};

}  // namespace mlagpt::launch
