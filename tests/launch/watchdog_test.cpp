// CollectiveWatchdog and WatchedCommunicator in one process: deadlines (start-up, steady, scoped), the report (the
// overdue collective, then the flight record of the last N), device probes (NCCL's case, with a fake), asynchronous
// errors and aborting the watched communicators, and the thread ending the process through `end`. The same
// machinery under mpiexec, with real stuck and dead ranks, is tests/trainer/fault_test.cpp.
#include <ATen/ops/ones.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>

#include "launch/error.h"
#include "launch/watchdog.h"
#include "launch/watched_communicator.h"

namespace {

using mlagpt::launch::CollectiveWatchdog;
using mlagpt::launch::WatchdogOptions;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A watchdog whose thread never gets to check (a poll far longer than any test): the tests call check() themselves.
struct Quiet {
  explicit Quiet(WatchdogOptions options) : watchdog(with_slow_poll(options), "rank 1 on host h", report, end) {}
  static WatchdogOptions with_slow_poll(WatchdogOptions options) {
    options.poll_s = 3600;
    return options;
  }
  CollectiveWatchdog::Report report = [](const std::string&) { FAIL() << "the thread must not report"; };
  CollectiveWatchdog::End end = [] { FAIL() << "the thread must not end the process"; };
  CollectiveWatchdog watchdog;
};

TEST(CollectiveWatchdog, ACompletedCollectiveIsNeverOverdue) {
  Quiet quiet({.timeout_s = 0.05, .startup_timeout_s = 0.05});
  const uint64_t ticket = quiet.watchdog.issued("dp", 2, 1, "all_reduce", 4096);
  quiet.watchdog.completed(ticket);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(quiet.watchdog.check(), "");
  EXPECT_TRUE(contains(quiet.watchdog.flight_record(), "done in")) << quiet.watchdog.flight_record();
}

TEST(CollectiveWatchdog, AnOverdueCollectiveIsReportedByGroupOpSequenceAndBytes) {
  Quiet quiet({.timeout_s = 0.05, .startup_timeout_s = 0.05});
  quiet.watchdog.completed(quiet.watchdog.issued("tp", 4, 6, "all_gather", 100));
  quiet.watchdog.issued("dp", 3, 7, "all_reduce", 3 << 20);
  EXPECT_EQ(quiet.watchdog.check(), "") << "not overdue yet";
  std::this_thread::sleep_for(std::chrono::milliseconds(120));
  const std::string report = quiet.watchdog.check();
  EXPECT_TRUE(contains(report,
                       "rank 1 on host h: collective timeout: all_reduce #7 on the dp group (3 ranks) of "
                       "3.00 MiB has not completed after"))
      << report;
  EXPECT_TRUE(contains(report, "all_gather")) << "the flight record lists the earlier ones too:\n" << report;
  EXPECT_TRUE(contains(report, "PENDING")) << report;
}

TEST(CollectiveWatchdog, TheFlightRecordKeepsTheLastHistoryCollectives) {
  Quiet quiet({.timeout_s = 10, .startup_timeout_s = 10, .history = 3});
  for (uint64_t seq = 1; seq <= 5; ++seq) {
    quiet.watchdog.completed(quiet.watchdog.issued("dp", 2, seq, fmt::format("op{}", seq), 8));
  }
  const std::string record = quiet.watchdog.flight_record();
  EXPECT_TRUE(contains(record, "its last 3 collective(s)")) << record;
  EXPECT_FALSE(contains(record, "op2")) << record;
  for (const char* kept : {"op3", "op4", "op5"}) {
    EXPECT_TRUE(contains(record, kept)) << record;
  }
}

TEST(CollectiveWatchdog, StartUpGetsTheLongerTimeoutUntilSteady) {
  Quiet quiet({.timeout_s = 0.05, .startup_timeout_s = 30});
  EXPECT_DOUBLE_EQ(quiet.watchdog.current_timeout(), 30);
  quiet.watchdog.issued("world", 4, 0, "process mesh set-up", 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(quiet.watchdog.check(), "") << "issued during start-up: 30 s";
  quiet.watchdog.steady();
  EXPECT_DOUBLE_EQ(quiet.watchdog.current_timeout(), 0.05);
  EXPECT_EQ(quiet.watchdog.check(), "") << "the deadline of a pending collective stays the one it was issued with";
  quiet.watchdog.issued("dp", 2, 1, "all_reduce", 4);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(contains(quiet.watchdog.check(), "all_reduce #1"));
}

TEST(CollectiveWatchdog, ATimeoutScopeLengthensTheDeadlineOfWhatItIssues) {
  Quiet quiet({.timeout_s = 0.05, .startup_timeout_s = 0.05});
  {
    const CollectiveWatchdog::TimeoutScope patient(&quiet.watchdog, 30);
    EXPECT_DOUBLE_EQ(quiet.watchdog.current_timeout(), 30);
    quiet.watchdog.issued("dp", 2, 1, "checkpoint agreement", 8);
  }
  EXPECT_DOUBLE_EQ(quiet.watchdog.current_timeout(), 0.05);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(quiet.watchdog.check(), "");
  const CollectiveWatchdog::TimeoutScope shorter(&quiet.watchdog, 0.01);
  EXPECT_DOUBLE_EQ(quiet.watchdog.current_timeout(), 0.05) << "a scope never shortens the deadline";
}

TEST(CollectiveWatchdog, ADeviceProbeCompletesARecordOnTheWatchdogsSide) {
  Quiet quiet({.timeout_s = 0.05, .startup_timeout_s = 0.05});
  std::atomic<bool> finished{false};
  const uint64_t ticket = quiet.watchdog.issued("dp", 2, 1, "all_reduce", 64);
  quiet.watchdog.attach(ticket, [&finished] { return finished.load(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  finished = true;
  EXPECT_EQ(quiet.watchdog.check(), "") << "the probe says it finished: not overdue";
  EXPECT_TRUE(contains(quiet.watchdog.flight_record(), "done in"));

  const uint64_t stuck = quiet.watchdog.issued("dp", 2, 2, "all_reduce", 64);
  quiet.watchdog.attach(stuck, [] { return false; });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(contains(quiet.watchdog.check(), "all_reduce #2"));
}

// A communicator whose collectives do nothing and whose async error and abort the test controls.
class FakeComm final : public mlagpt::launch::Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 2; }
  std::string backend() const override { return "fake"; }
  void all_reduce(at::Tensor&, mlagpt::launch::ReduceOp) override {}
  void broadcast(at::Tensor&, int) override {}
  void all_gather(const at::Tensor&, at::Tensor&) override {}
  void reduce_scatter(const at::Tensor&, at::Tensor&, mlagpt::launch::ReduceOp) override {}
  void barrier() override { throw std::runtime_error("barrier failed"); }
  std::function<bool()> last_collective_done() const override { return device_done; }
  std::string async_error() const override { return error; }
  void abort() override { ++aborts; }

  std::function<bool()> device_done;
  std::string error;
  std::atomic<int> aborts{0};
};

TEST(WatchedCommunicator, NumbersTheGroupsCollectivesAndCompletesThem) {
  Quiet quiet({.timeout_s = 10, .startup_timeout_s = 10});
  auto owned = std::make_unique<FakeComm>();
  mlagpt::launch::WatchedCommunicator comm(std::move(owned), "dp", quiet.watchdog);
  at::Tensor t = at::ones({3, 5});
  comm.all_reduce(t, mlagpt::launch::ReduceOp::kSum);
  comm.broadcast(t, 0);
  auto work = comm.all_reduce_async(t, mlagpt::launch::ReduceOp::kSum);
  EXPECT_TRUE(contains(quiet.watchdog.flight_record(), "PENDING")) << "an async one is pending until waited on";
  work->wait();
  EXPECT_THROW(comm.barrier(), std::runtime_error);
  const std::string record = quiet.watchdog.flight_record();
  EXPECT_FALSE(contains(record, "PENDING")) << "a collective that threw is complete too:\n" << record;
  for (const char* line : {"dp/2", "all_reduce", "broadcast", "all_reduce_async", "barrier", "60 B"}) {
    EXPECT_TRUE(contains(record, line)) << line << "\n" << record;
  }
  EXPECT_EQ(comm.next_seq(), 5u);
}

TEST(WatchedCommunicator, AnEnqueuedCollectiveIsPendingUntilItsDeviceProbeSaysDone) {
  Quiet quiet({.timeout_s = 10, .startup_timeout_s = 10});
  auto owned = std::make_unique<FakeComm>();
  std::atomic<bool> finished{false};
  owned->device_done = [&finished] { return finished.load(); };
  mlagpt::launch::WatchedCommunicator comm(std::move(owned), "tp", quiet.watchdog);
  at::Tensor t = at::ones({4});
  comm.all_reduce(t, mlagpt::launch::ReduceOp::kSum);
  auto work = comm.all_gather_async(t, t);
  work->wait();  // NCCL's wait() only orders streams: the collective need not be done
  EXPECT_EQ(quiet.watchdog.check(), "");
  EXPECT_TRUE(contains(quiet.watchdog.flight_record(), "PENDING"));
  finished = true;
  EXPECT_EQ(quiet.watchdog.check(), "");
  EXPECT_FALSE(contains(quiet.watchdog.flight_record(), "PENDING")) << quiet.watchdog.flight_record();
}

TEST(CollectiveWatchdog, TheThreadReportsAbortsTheCommunicatorsAndEndsOnAnAsyncError) {
  std::promise<std::string> reported;
  std::promise<void> ended;
  CollectiveWatchdog watchdog(
      {.timeout_s = 10, .startup_timeout_s = 10, .poll_s = 0.01, .grace_s = 0.01}, "rank 0 on host h",
      [&](const std::string& r) { reported.set_value(r); }, [&] { ended.set_value(); });
  auto owned = std::make_unique<FakeComm>();
  FakeComm* fake = owned.get();
  mlagpt::launch::WatchedCommunicator comm(std::move(owned), "dp", watchdog);
  fake->error = "NCCL asynchronous error: remote process exited";
  auto report = reported.get_future();
  ASSERT_EQ(report.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(contains(report.get(), "the dp group's communicator failed: NCCL asynchronous error"));
  ASSERT_EQ(ended.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(fake->aborts.load(), 1);
}

TEST(CollectiveWatchdog, TheThreadEndsTheProcessOnATimeoutAfterTheGrace) {
  std::promise<std::string> reported;
  std::promise<void> ended;
  const auto start = std::chrono::steady_clock::now();
  CollectiveWatchdog watchdog(
      {.timeout_s = 0.1, .startup_timeout_s = 0.1, .poll_s = 0.01, .grace_s = 0.2}, "rank 0 on host h",
      [&](const std::string& r) { reported.set_value(r); }, [&] { ended.set_value(); });
  watchdog.issued("dp", 2, 9, "reduce_scatter_async", 1024);
  auto end = ended.get_future();
  ASSERT_EQ(end.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(seconds, 0.3) << "timeout + grace";
  EXPECT_TRUE(contains(reported.get_future().get(), "reduce_scatter_async #9 on the dp group (2 ranks) of 1.0 KiB"));
}

TEST(CollectiveWatchdog, BadOptionsAreAConfigError) {
  const auto make = [](WatchdogOptions options) {
    CollectiveWatchdog watchdog(
        options, "r", [](const std::string&) {}, [] {});
  };
  EXPECT_THROW(make({.timeout_s = 0}), mlagpt::ConfigError);
  EXPECT_THROW(make({.timeout_s = 1, .startup_timeout_s = 1, .history = 0}), mlagpt::ConfigError);
}

}  // namespace
