#include "data/progress_meter.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

namespace mlagpt::data {
namespace {

constexpr int kBarWidth = 30;
constexpr auto kRedrawInterval = std::chrono::milliseconds(100);

double seconds_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

ProgressMeter::ProgressMeter(std::string label, int64_t total_bytes, std::chrono::seconds log_interval)
    : label_(std::move(label)),
      total_bytes_(std::max<int64_t>(total_bytes, 1)),
      log_interval_(log_interval),
      terminal_(::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_report_(start_) {}

ProgressMeter::~ProgressMeter() {
  if (terminal_ && !finished_ && last_report_ != start_) {
    std::fputs("\n", stderr);  // leave the partly drawn bar on its own line (the pass ended with an error)
  }
}

void ProgressMeter::update(int64_t done_bytes) {
  const auto now = std::chrono::steady_clock::now();
  const std::chrono::steady_clock::duration interval =
      terminal_ ? std::chrono::steady_clock::duration(kRedrawInterval) : log_interval_;
  if (now - last_report_ >= interval) {
    last_report_ = now;
    draw(done_bytes, false);
  }
}

double ProgressMeter::finish() {
  if (!finished_) {
    finished_ = true;
    // A pass short enough to never have reported says nothing now either: the caller logs its summary.
    if (terminal_ && last_report_ != start_) {
      draw(total_bytes_, true);
    }
  }
  return seconds_between(start_, std::chrono::steady_clock::now());
}

void ProgressMeter::draw(int64_t done_bytes, bool final) {
  const double fraction = std::clamp(static_cast<double>(done_bytes) / static_cast<double>(total_bytes_), 0.0, 1.0);
  const double seconds = seconds_between(start_, std::chrono::steady_clock::now());
  const double rate = seconds > 0 ? static_cast<double>(done_bytes) / 1e6 / seconds : 0.0;
  const double done_mb = static_cast<double>(done_bytes) / 1e6;
  const double total_mb = static_cast<double>(total_bytes_) / 1e6;
  if (terminal_) {
    const int filled = static_cast<int>(fraction * kBarWidth);
    fmt::print(stderr, "\r[data] {} [{}{}] {:3.0f}%  {:.1f} / {:.1f} MB  {:.1f} MB/s{}", label_,
               std::string(static_cast<size_t>(filled), '#'), std::string(static_cast<size_t>(kBarWidth - filled), ' '),
               100 * fraction, done_mb, total_mb, rate, final ? "\n" : "");
    std::fflush(stderr);
  } else {
    spdlog::info("[data] {}: {:.0f}% ({:.1f} / {:.1f} MB, {:.1f} MB/s)", label_, 100 * fraction, done_mb, total_mb,
                 rate);
  }
}

}  // namespace mlagpt::data
