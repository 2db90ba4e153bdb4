// CollectiveWatchdog: a thread per process that ends the job when a collective does not complete in time, so that a
// dead or stuck rank never leaves the others waiting for ever (the role of PyTorch's NCCL watchdog and flight
// recorder; docs/design.md "Faults and launching").
//
// What it watches: every collective a WatchedCommunicator issues (launch/watched_communicator.h) is recorded here
// with its group, operation, bytes, the group's sequence number and a deadline, and again when it completes. On
// MPI a collective completes when its blocking call or its Work's wait() returns (the caller's thread is blocked
// inside MPI meanwhile); on NCCL the host returns at once, so the record carries a probe of the CUDA event after
// the collective, which this thread queries. Phases made of raw MPI calls (the process mesh's set-up, NCCL's
// initialization) are recorded as one collective by a Guard. The thread also polls every watched communicator's
// async_error() (NCCL's ncclCommGetAsyncError).
//
// Deadlines: collectives issued before steady() get startup_timeout_s (start-up: NCCL's initialization, loading a
// checkpoint, the first step's allocations), after it timeout_s; a TimeoutScope gives the collectives issued while
// it lives a longer timeout (checkpoint saves, compression passes: one rank's work there can hold the others for
// longer than a step).
//
// On a failure (a collective past its deadline, or an asynchronous error) the thread, once: writes the report
// (which collective, how long it has waited, and this process's last `history` collectives, oldest first, pending
// ones marked) through `report`; aborts every watched communicator (ncclCommAbort, so that nothing stays blocked in
// NCCL); waits `grace_s`, so that the other ranks stuck on the same collective can write their reports too; and
// calls `end`, which ends the process and the job (the Trainer's: Runtime::end_job, MPI_Abort). Every rank that can
// still speak thus names the collectives it issued: the stuck rank is the one whose sequence numbers stop short, or
// that says nothing.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mlagpt::launch {

class Communicator;

struct WatchdogOptions {
  double timeout_s = 600;           // parallel.timeout_s: a collective after start-up
  double startup_timeout_s = 1800;  // parallel.startup_timeout_s: until steady()
  int history = 32;                 // parallel.collective_history: collectives kept for the report
  double poll_s = 0;                // between checks; 0 = min(1 s, timeout_s / 10)
  double grace_s = 2;               // between the report and `end`
};

// One collective (or guarded phase) as this process issued it.
struct CollectiveRecord {
  uint64_t id = 0;    // this process's issue order, from 1
  std::string group;  // "dp", "tp", "world"
  int group_size = 0;
  uint64_t seq = 0;  // the group's sequence number: the same on every rank of the group for the same collective
  std::string op;    // "all_reduce", "broadcast", ..., or the phase
  int64_t bytes = 0;
  double issued_s = 0;      // seconds since the watchdog started
  double completed_s = -1;  // < 0 while pending
  double timeout_s = 0;
  std::function<bool()> done;  // the device's completion (NCCL), or empty; kept in pending records only
};

class CollectiveWatchdog {
 public:
  using Report = std::function<void(const std::string& report)>;
  using End = std::function<void()>;

  // Starts the thread. `label` names this process in reports ("rank 3 on host a12").
  CollectiveWatchdog(WatchdogOptions options, std::string label, Report report, End end);
  // Stops the thread (the process is ending normally); a failure already being handled runs to its end.
  ~CollectiveWatchdog();
  CollectiveWatchdog(const CollectiveWatchdog&) = delete;
  CollectiveWatchdog& operator=(const CollectiveWatchdog&) = delete;

  // Records a collective this process issued; returns the ticket completed() takes. `done`, when given, says from
  // any thread whether it has finished (completed() is then not needed, though harmless).
  uint64_t issued(const std::string& group, int group_size, uint64_t seq, const std::string& op, int64_t bytes,
                  std::function<bool()> done = {});
  void completed(uint64_t ticket);
  // Gives a pending record the probe that says when it completes (for a collective whose issuing call returned
  // before it finished).
  void attach(uint64_t ticket, std::function<bool()> done);

  // From now on collectives get timeout_s instead of startup_timeout_s (the trainer calls it after the first step).
  void steady();
  double current_timeout() const;

  // While it lives, collectives issued get `seconds` (the longer of it and the current timeout).
  class TimeoutScope {
   public:
    TimeoutScope(CollectiveWatchdog* watchdog, double seconds);
    ~TimeoutScope();
    TimeoutScope(const TimeoutScope&) = delete;
    TimeoutScope& operator=(const TimeoutScope&) = delete;

   private:
    CollectiveWatchdog* watchdog_;
    double previous_ = 0;
  };

  // A phase of raw MPI/NCCL calls recorded as one collective from construction to destruction.
  class Guard {
   public:
    Guard(CollectiveWatchdog* watchdog, const std::string& group, int group_size, const std::string& phase);
    ~Guard();
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    CollectiveWatchdog* watchdog_;
    uint64_t ticket_ = 0;
  };

  // Polls `comm`'s async_error() and aborts it on a failure, until unwatch(). `group` names it in reports.
  void watch(Communicator* comm, const std::string& group);
  void unwatch(Communicator* comm);

  // One check, as the thread makes it: the failure's report, or "" when all is well. Exposed for tests.
  std::string check();
  // This process's recent collectives as a table, oldest first (part of every report).
  std::string flight_record() const;
  const WatchdogOptions& options() const { return options_; }

 private:
  using Clock = std::chrono::steady_clock;
  double now_s() const;
  void run();
  void fail(const std::string& report);

  const WatchdogOptions options_;
  const std::string label_;
  const Report report_;
  const End end_;
  const Clock::time_point start_ = Clock::now();

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool steady_ = false;
  double scoped_timeout_ = 0;  // > 0 inside a TimeoutScope
  uint64_t next_id_ = 1;
  std::map<uint64_t, CollectiveRecord> pending_;  // by id
  std::deque<CollectiveRecord> history_;          // the last options_.history issued, pending or not
  std::vector<std::pair<Communicator*, std::string>> watched_;
  std::thread thread_;
};

// The exit status of a job the watchdog ended (that of coreutils' `timeout`).
inline constexpr int kWatchdogExitCode = 124;

// Bytes for the report's table: "1.50 MiB".
std::string human_bytes(int64_t bytes);

}  // namespace mlagpt::launch
