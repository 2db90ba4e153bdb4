// Progress of a long pass over a known number of bytes, for `mlagpt prepare`.
//
// On a terminal (stderr is a tty) it redraws one line in place, at most ten times a second:
//   [data] tokenizing [##########          ]  50%  1.3 / 2.6 MB  4.1 MB/s
// Otherwise (a log file, CI) it logs "[data] tokenizing: 50% (1.3 / 2.6 MB, 4.1 MB/s)" through spdlog every
// `log_interval`, so that logs stay readable. Not thread-safe: call it from the thread that drives the pass.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace mlagpt::data {

class ProgressMeter {
 public:
  ProgressMeter(std::string label, int64_t total_bytes, std::chrono::seconds log_interval = std::chrono::seconds(10));
  ~ProgressMeter();  // ends the terminal line if finish() was not called
  ProgressMeter(const ProgressMeter&) = delete;
  ProgressMeter& operator=(const ProgressMeter&) = delete;

  // `done_bytes` so far (not an increment).
  void update(int64_t done_bytes);
  // Draws 100% and ends the line; returns the seconds since construction.
  double finish();

 private:
  void draw(int64_t done_bytes, bool final);

  std::string label_;
  int64_t total_bytes_;
  std::chrono::seconds log_interval_;
  bool terminal_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_report_;
};

}  // namespace mlagpt::data
