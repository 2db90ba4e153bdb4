// StopSignals turns SIGTERM, SIGINT and SIGUSR1 into a recorded request, keeps the first one, refuses a second
// installation, and gives the previous handlers back when it goes.
#include "launch/stop_signals.h"

#include <gtest/gtest.h>

#include <csignal>

#include "launch/error.h"

namespace {

std::sig_atomic_t previous_handler_calls = 0;
void previous_handler(int) {
  previous_handler_calls = previous_handler_calls + 1;
}

}  // namespace

TEST(StopSignals, RecordsTheFirstSignalInsteadOfTerminating) {
  mlagpt::launch::StopSignals signals;
  EXPECT_EQ(signals.received(), 0);
  ASSERT_EQ(std::raise(SIGUSR1), 0);
  EXPECT_EQ(signals.received(), SIGUSR1);
  ASSERT_EQ(std::raise(SIGTERM), 0);
  EXPECT_EQ(signals.received(), SIGUSR1) << "the first signal is the one reported";
  EXPECT_STREQ(mlagpt::launch::signal_name(signals.received()), "SIGUSR1");
}

TEST(StopSignals, StartsFreshAndRestoresThePreviousHandlers) {
  std::signal(SIGINT, previous_handler);
  {
    mlagpt::launch::StopSignals signals;
    EXPECT_EQ(signals.received(), 0) << "a signal of an earlier instance leaked into this one";
    EXPECT_THROW(mlagpt::launch::StopSignals second, mlagpt::Error);
    ASSERT_EQ(std::raise(SIGINT), 0);
    EXPECT_EQ(signals.received(), SIGINT);
    EXPECT_EQ(previous_handler_calls, 0);
  }
  ASSERT_EQ(std::raise(SIGINT), 0);
  EXPECT_EQ(previous_handler_calls, 1);
  std::signal(SIGINT, SIG_DFL);
}
