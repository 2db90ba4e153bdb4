#include "launch/watchdog.h"

#include <fmt/format.h>

#include <algorithm>
#include <exception>
#include <utility>

#include "launch/communicator.h"
#include "launch/error.h"

namespace mlagpt::launch {

std::string human_bytes(int64_t bytes) {
  const auto value = static_cast<double>(bytes);
  if (bytes >= (int64_t{1} << 30)) {
    return fmt::format("{:.2f} GiB", value / (1 << 30));
  }
  if (bytes >= (int64_t{1} << 20)) {
    return fmt::format("{:.2f} MiB", value / (1 << 20));
  }
  if (bytes >= (int64_t{1} << 10)) {
    return fmt::format("{:.1f} KiB", value / (1 << 10));
  }
  return fmt::format("{} B", bytes);
}

CollectiveWatchdog::CollectiveWatchdog(WatchdogOptions options, std::string label, Report report, End end)
    : options_(options), label_(std::move(label)), report_(std::move(report)), end_(std::move(end)) {
  if (!(options_.timeout_s > 0) || !(options_.startup_timeout_s > 0) || options_.history < 1) {
    throw ConfigError(
        fmt::format("watchdog: timeout_s ({}) and startup_timeout_s ({}) must be > 0 and history ({}) >= 1",
                    options_.timeout_s, options_.startup_timeout_s, options_.history));
  }
  thread_ = std::thread([this] { run(); });
}

CollectiveWatchdog::~CollectiveWatchdog() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

double CollectiveWatchdog::now_s() const {
  return std::chrono::duration<double>(Clock::now() - start_).count();
}

double CollectiveWatchdog::current_timeout() const {
  const std::lock_guard lock(mutex_);
  const double base = steady_ ? options_.timeout_s : options_.startup_timeout_s;
  return std::max(base, scoped_timeout_);
}

uint64_t CollectiveWatchdog::issued(const std::string& group, int group_size, uint64_t seq, const std::string& op,
                                    int64_t bytes, std::function<bool()> done) {
  const double timeout = current_timeout();
  const std::lock_guard lock(mutex_);
  CollectiveRecord record{.id = next_id_++,
                          .group = group,
                          .group_size = group_size,
                          .seq = seq,
                          .op = op,
                          .bytes = bytes,
                          .issued_s = now_s(),
                          .completed_s = -1,
                          .timeout_s = timeout,
                          .done = {}};
  const uint64_t id = record.id;
  history_.push_back(record);  // for the report; only the pending record needs the probe
  while (history_.size() > static_cast<size_t>(options_.history)) {
    history_.pop_front();
  }
  record.done = std::move(done);
  pending_.emplace(id, std::move(record));
  return id;
}

void CollectiveWatchdog::completed(uint64_t ticket) {
  const std::lock_guard lock(mutex_);
  if (pending_.erase(ticket) == 0) {
    return;  // already seen complete by its probe
  }
  const double now = now_s();
  for (auto it = history_.rbegin(); it != history_.rend(); ++it) {
    if (it->id == ticket) {
      it->completed_s = now;
      break;
    }
  }
}

void CollectiveWatchdog::attach(uint64_t ticket, std::function<bool()> done) {
  const std::lock_guard lock(mutex_);
  const auto found = pending_.find(ticket);
  if (found != pending_.end()) {
    found->second.done = std::move(done);
  }
}

void CollectiveWatchdog::steady() {
  const std::lock_guard lock(mutex_);
  steady_ = true;
}

CollectiveWatchdog::TimeoutScope::TimeoutScope(CollectiveWatchdog* watchdog, double seconds) : watchdog_(watchdog) {
  if (watchdog_ != nullptr) {
    const std::lock_guard lock(watchdog_->mutex_);
    previous_ = watchdog_->scoped_timeout_;
    watchdog_->scoped_timeout_ = std::max(previous_, seconds);
  }
}

CollectiveWatchdog::TimeoutScope::~TimeoutScope() {
  if (watchdog_ != nullptr) {
    const std::lock_guard lock(watchdog_->mutex_);
    watchdog_->scoped_timeout_ = previous_;
  }
}

CollectiveWatchdog::Guard::Guard(CollectiveWatchdog* watchdog, const std::string& group, int group_size,
                                 const std::string& phase)
    : watchdog_(watchdog) {
  if (watchdog_ != nullptr) {
    ticket_ = watchdog_->issued(group, group_size, 0, phase, 0);
  }
}

CollectiveWatchdog::Guard::~Guard() {
  if (watchdog_ != nullptr) {
    watchdog_->completed(ticket_);
  }
}

void CollectiveWatchdog::watch(Communicator* comm, const std::string& group) {
  const std::lock_guard lock(mutex_);
  watched_.emplace_back(comm, group);
}

void CollectiveWatchdog::unwatch(Communicator* comm) {
  const std::lock_guard lock(mutex_);
  std::erase_if(watched_, [comm](const auto& entry) { return entry.first == comm; });
}

std::string CollectiveWatchdog::flight_record() const {
  const std::lock_guard lock(mutex_);
  const double now = now_s();
  std::string table = fmt::format("{}: its last {} collective(s), oldest first (times in s since it started):\n",
                                  label_, history_.size());
  table += fmt::format("  {:>6}  {:<6} {:>6}  {:<28} {:>12}  {:>10}  {}\n", "id", "group", "seq", "op", "bytes",
                       "issued", "state");
  for (const CollectiveRecord& r : history_) {
    const std::string state = r.completed_s >= 0
                                  ? fmt::format("done in {:.3f} s", r.completed_s - r.issued_s)
                                  : fmt::format("PENDING for {:.1f} s (timeout {:g} s)", now - r.issued_s, r.timeout_s);
    table +=
        fmt::format("  {:>6}  {:<6} {:>6}  {:<28} {:>12}  {:>10.3f}  {}\n", r.id,
                    fmt::format("{}/{}", r.group, r.group_size), r.seq, r.op, human_bytes(r.bytes), r.issued_s, state);
  }
  return table;
}

std::string CollectiveWatchdog::check() {
  std::vector<std::pair<uint64_t, std::function<bool()>>> probes;
  {
    const std::lock_guard lock(mutex_);
    for (const auto& [id, record] : pending_) {
      if (record.done) {
        probes.emplace_back(id, record.done);
      }
    }
  }
  // Outside the lock: a probe queries the device, and the main thread must not wait for that to issue.
  for (const auto& [id, done] : probes) {
    bool finished = false;
    try {
      finished = done();
    } catch (const std::exception& e) {
      return fmt::format("{}: a collective's completion could not be queried: {}\n{}", label_, e.what(),
                         flight_record());
    }
    if (finished) {
      completed(id);
    }
  }
  std::string failed_group;
  std::string error;
  {
    // Under the lock, so that a communicator is not destroyed (unwatch) while it is asked; the query does not block.
    const std::lock_guard lock(mutex_);
    for (const auto& [comm, group] : watched_) {
      error = comm->async_error();
      if (!error.empty()) {
        failed_group = group;
        break;
      }
    }
  }
  if (!error.empty()) {
    return fmt::format("{}: the {} group's communicator failed: {}\n{}", label_, failed_group, error, flight_record());
  }
  std::string overdue;
  {
    const std::lock_guard lock(mutex_);
    const double now = now_s();
    for (const auto& [id, r] : pending_) {  // by id: the oldest overdue one is the one reported
      if (now - r.issued_s > r.timeout_s) {
        overdue = fmt::format(
            "{}: collective timeout: {} #{} on the {} group ({} ranks) of {} has not completed after {:.1f} s "
            "(timeout {:g} s; parallel.timeout_s, parallel.startup_timeout_s before the first step). A rank of "
            "the group is stuck, dead or far behind: the rank whose collectives stop short of #{} (or that reports "
            "nothing) is the one.",
            label_, r.op, r.seq, r.group, r.group_size, human_bytes(r.bytes), now - r.issued_s, r.timeout_s, r.seq);
        break;
      }
    }
  }
  if (overdue.empty()) {
    return {};
  }
  return overdue + "\n" + flight_record();
}

void CollectiveWatchdog::fail(const std::string& report) {
  report_(report);
  std::unique_lock lock(mutex_);
  for (const auto& [comm, group] : watched_) {  // under the lock, as in check()
    comm->abort();
  }
  wake_.wait_for(lock, std::chrono::duration<double>(options_.grace_s), [this] { return stopping_; });
  lock.unlock();
  end_();
}

void CollectiveWatchdog::run() {
  const double poll = options_.poll_s > 0 ? options_.poll_s : std::min(1.0, options_.timeout_s / 10);
  while (true) {
    {
      std::unique_lock lock(mutex_);
      if (wake_.wait_for(lock, std::chrono::duration<double>(poll), [this] { return stopping_; })) {
        return;
      }
    }
    const std::string report = check();
    if (!report.empty()) {
      fail(report);
      return;
    }
  }
}

}  // namespace mlagpt::launch
