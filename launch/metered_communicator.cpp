#include "launch/metered_communicator.h"

#include <chrono>
#include <utility>

namespace mlagpt::launch {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Adds the time its caller spends in wait() to the meter.
class MeteredWork final : public Work {
 public:
  MeteredWork(std::unique_ptr<Work> inner, std::string group, CollectiveKind kind, CollectiveMeter& meter)
      : inner_(std::move(inner)), group_(std::move(group)), kind_(kind), meter_(meter) {}

  void wait() override {
    const Clock::time_point start = Clock::now();
    inner_->wait();
    meter_.add_seconds(group_, kind_, seconds_since(start));
  }
  bool test() override { return inner_->test(); }

 private:
  std::unique_ptr<Work> inner_;
  std::string group_;
  CollectiveKind kind_;
  CollectiveMeter& meter_;
};

}  // namespace

CollectiveTotals& CollectiveMeter::at(const std::string& group, CollectiveKind kind) {
  for (Group& g : groups_) {
    if (g.name == group) {
      return g.kinds[static_cast<size_t>(kind)];
    }
  }
  groups_.push_back(Group{.name = group});
  return groups_.back().kinds[static_cast<size_t>(kind)];
}

void CollectiveMeter::add(const std::string& group, CollectiveKind kind, int64_t bytes, double seconds) {
  CollectiveTotals& totals = at(group, kind);
  ++totals.count;
  totals.bytes += bytes;
  totals.seconds += seconds;
}

void CollectiveMeter::add_seconds(const std::string& group, CollectiveKind kind, double seconds) {
  at(group, kind).seconds += seconds;
}

std::vector<CollectiveMeter::Row> CollectiveMeter::rows() const {
  std::vector<Row> rows;
  for (const Group& g : groups_) {
    for (int k = 0; k < kCollectiveKinds; ++k) {
      const CollectiveTotals& totals = g.kinds[static_cast<size_t>(k)];
      if (totals.count > 0) {
        rows.push_back(Row{.group = g.name, .kind = static_cast<CollectiveKind>(k), .totals = totals});
      }
    }
  }
  return rows;
}

double CollectiveMeter::total_seconds() const {
  double seconds = 0;
  for (const Group& g : groups_) {
    for (const CollectiveTotals& totals : g.kinds) {
      seconds += totals.seconds;
    }
  }
  return seconds;
}

MeteredCommunicator::MeteredCommunicator(std::unique_ptr<Communicator> inner, std::string group, CollectiveMeter& meter)
    : CommunicatorDecorator(std::move(inner)), group_(std::move(group)), meter_(meter) {}

void MeteredCommunicator::blocking(CollectiveKind kind, int64_t bytes, const std::function<void()>& call) {
  const Clock::time_point start = Clock::now();
  call();
  meter_.add(group_, kind, bytes, seconds_since(start));
}

std::unique_ptr<Work> MeteredCommunicator::async(CollectiveKind kind, int64_t bytes,
                                                 const std::function<std::unique_ptr<Work>()>& call) {
  const Clock::time_point start = Clock::now();
  std::unique_ptr<Work> work = call();
  meter_.add(group_, kind, bytes, seconds_since(start));  // starting it: MPI's first progress, NCCL's enqueue
  return std::make_unique<MeteredWork>(std::move(work), group_, kind, meter_);
}

}  // namespace mlagpt::launch
