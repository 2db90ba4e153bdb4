#include "launch/stop_signals.h"

#include <csignal>

#include <array>
#include <atomic>

#include "launch/error.h"

namespace mlagpt::launch {
namespace {

constexpr std::array kSignals = {SIGTERM, SIGINT, SIGUSR1};

// Written by the handler: a lock-free atomic is async-signal-safe.
std::atomic<int> received_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);
std::atomic<bool> installed{false};
std::array<struct sigaction, kSignals.size()> previous{};

void record(int signal) {
  int none = 0;
  received_signal.compare_exchange_strong(none, signal);
}

}  // namespace

StopSignals::StopSignals() {
  if (installed.exchange(true)) {
    throw Error("StopSignals: the stop-signal handlers are already installed in this process");
  }
  received_signal = 0;
  struct sigaction action {};
  action.sa_handler = record;
  sigemptyset(&action.sa_mask);
  // SA_RESETHAND: the next signal of the same kind gets the default action (terminate). SA_RESTART: system calls
  // interrupted by the signal (a file write of a checkpoint, a condition wait) resume instead of failing.
  action.sa_flags = SA_RESETHAND | SA_RESTART;
  for (size_t i = 0; i < kSignals.size(); ++i) {
    sigaction(kSignals[i], &action, &previous[i]);
  }
}

StopSignals::~StopSignals() {
  for (size_t i = 0; i < kSignals.size(); ++i) {
    sigaction(kSignals[i], &previous[i], nullptr);
  }
  installed = false;
}

int StopSignals::received() const {
  return received_signal.load();
}

const char* signal_name(int signal) {
  switch (signal) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGUSR1: return "SIGUSR1";
    default: return "a signal";
  }
}

}  // namespace mlagpt::launch
