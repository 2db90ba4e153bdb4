// MeteredCommunicator: a Communicator decorator that counts, per collective kind, how many collectives a group ran,
// the bytes they moved and the seconds the calling thread spent waiting in them, into a CollectiveMeter that the
// trainer publishes as metrics (mlagpt_collective_*_total, docs/design.md "Metrics").
//
// What "seconds" is: the host time the caller was blocked in the collective, i.e. the part of communication that the
// step did not hide. A blocking collective counts its whole call; an async one counts only the time spent in its
// Work's wait() (a Work that test() found complete, or that completed while the caller computed, adds nothing).
// With NCCL the host is blocked only while a collective is enqueued (the GPU orders the work), so there the figure
// is the enqueue time, not the time the GPU spent communicating. Async collectives are counted under the kind of
// their blocking version (all_reduce_async as all_reduce). Bytes: the tensor reduced or broadcast, the gathered
// output, the reduce-scattered input (what the watchdog records too).
//
// The meter is written by the thread that calls the collectives (only the main thread communicates) and read by the
// same thread when the trainer publishes it; it is not synchronized.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "launch/communicator_decorator.h"

namespace mlagpt::launch {

struct CollectiveTotals {
  int64_t count = 0;
  int64_t bytes = 0;
  double seconds = 0;
};

// Running totals per group name and collective kind.
class CollectiveMeter {
 public:
  struct Row {
    std::string group;
    CollectiveKind kind;
    CollectiveTotals totals;
  };

  void add(const std::string& group, CollectiveKind kind, int64_t bytes, double seconds);
  void add_seconds(const std::string& group, CollectiveKind kind, double seconds);
  // Every (group, kind) that has run at least once, in the order first seen.
  std::vector<Row> rows() const;
  // The sum over groups and kinds of the seconds blocked.
  double total_seconds() const;

 private:
  CollectiveTotals& at(const std::string& group, CollectiveKind kind);
  struct Group {
    std::string name;
    std::array<CollectiveTotals, kCollectiveKinds> kinds{};
  };
  std::vector<Group> groups_;
};

class MeteredCommunicator final : public CommunicatorDecorator {
 public:
  MeteredCommunicator(std::unique_ptr<Communicator> inner, std::string group, CollectiveMeter& meter);

 private:
  void blocking(CollectiveKind kind, int64_t bytes, const std::function<void()>& call) override;
  std::unique_ptr<Work> async(CollectiveKind kind, int64_t bytes,
                              const std::function<std::unique_ptr<Work>()>& call) override;

  std::string group_;
  CollectiveMeter& meter_;
};

}  // namespace mlagpt::launch
