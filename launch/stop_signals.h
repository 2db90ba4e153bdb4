// StopSignals: SIGTERM, SIGINT and SIGUSR1 become a request to stop at the next safe point instead of killing the
// process, so that a preempted or timed-out job (SLURM sends SIGTERM, or SIGUSR1 with `--signal=USR1@120`; Ctrl-C
// sends SIGINT) saves a checkpoint and exits. The handler only records the signal; the trainer polls received() at
// each step boundary and agrees on it with every rank. A second signal of the same kind acts as it would without us
// (SIGINT and SIGTERM terminate), so a stuck process can still be stopped at once.
#pragma once

namespace mlagpt::launch {

class StopSignals {
 public:
  // Installs the handlers; the destructor restores the ones that were there before. One at a time per process.
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The first signal received since construction, or 0.
  int received() const;
};

// "SIGTERM", "SIGINT", "SIGUSR1", or "a signal" for others.
const char* signal_name(int signal);

}  // namespace mlagpt::launch
