// A background thread that computes produce(i) for i = start, start + stride, start + 2 stride, ... ahead of a
// consumer, into a bounded queue. The loader uses it with i = the global sample position of a step and
// produce = "assemble this rank's batch of that step"; it knows nothing about batches itself.
//
// Threading: one producer thread owned by the Prefetcher, one consumer (the thread calling pop(), restart(),
// next_index()); the consumer-side calls are not meant to be made from two threads at once. The queue holds at
// most `depth` finished items; the producer waits while it is full. The destructor stops the producer and joins
// it, whether the queue is full or empty; an item being produced at that moment is finished and thrown away.
// pop() on an empty queue spins (yielding) for up to 50 us before it sleeps.
//
// Errors: when produce(i) throws, the items before i are still delivered in order, then pop() rethrows the
// exception (again on every later pop()) and nothing more is produced until restart().
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "launch/error.h"

namespace mlagpt::data {

template <typename T>
class Prefetcher {
 public:
  using Produce = std::function<T(int64_t index)>;

  Prefetcher(Produce produce, int64_t stride, int64_t depth, int64_t start = 0)
      : produce_(std::move(produce)), stride_(stride), depth_(depth), next_produced_(start), next_popped_(start) {
    if (depth < 1) {
      throw ConfigError("prefetch depth " + std::to_string(depth) + " must be at least 1");
    }
    thread_ = std::thread([this] { run(); });
  }

  ~Prefetcher() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    not_full_.notify_all();
    thread_.join();
  }

  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // The item for next_index(), waiting until it is ready.
  T pop() {
    // A consumer faster than the producer would otherwise sleep on every item and cost the producer a futex wake-up
    // each time (a fifth of the loader's time with batches of 16K tokens): spin a little first, waiting for an item
    // that is about to be pushed.
    const auto spin_until = std::chrono::steady_clock::now() + kSpin;
    while (ready_.load(std::memory_order_acquire) == 0 && std::chrono::steady_clock::now() < spin_until) {
      std::this_thread::yield();
    }
    std::unique_lock lock(mutex_);
    not_empty_.wait(lock, [&] { return !queue_.empty() || error_; });
    if (queue_.empty()) {
      std::rethrow_exception(error_);
    }
    Item item = std::move(queue_.front());
    queue_.pop_front();
    ready_.store(static_cast<int64_t>(queue_.size()), std::memory_order_release);
    lock.unlock();
    not_full_.notify_one();
    MLAGPT_CHECK(item.index == next_popped_, "the prefetch queue delivered an item out of order");
    next_popped_ += stride_;
    return std::move(item.value);
  }

  // The index whose item the next pop() returns.
  int64_t next_index() const { return next_popped_; }

  // Drops everything produced or being produced (and any error) and continues from `start`.
  void restart(int64_t start) {
    {
      std::lock_guard lock(mutex_);
      queue_.clear();
      ready_.store(0, std::memory_order_release);
      error_ = nullptr;
      next_produced_ = start;
      ++generation_;  // an item in production now belongs to the old sequence and is dropped when done
    }
    next_popped_ = start;
    not_full_.notify_all();
  }

 private:
  struct Item {
    int64_t index;
    T value;
  };

  void run() {
    std::unique_lock lock(mutex_);
    while (true) {
      not_full_.wait(lock, [&] { return stopping_ || (static_cast<int64_t>(queue_.size()) < depth_ && !error_); });
      if (stopping_) {
        return;
      }
      const int64_t index = next_produced_;
      const uint64_t generation = generation_;
      lock.unlock();
      // Produced outside the lock, so the consumer can pop finished items meanwhile.
      std::exception_ptr error;
      std::optional<T> value;
      try {
        value.emplace(produce_(index));
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      if (generation != generation_) {
        continue;  // restart() was called while producing: this item is of the old sequence
      }
      if (error) {
        error_ = error;
      } else {
        queue_.push_back(Item{index, std::move(*value)});
        next_produced_ = index + stride_;
        ready_.store(static_cast<int64_t>(queue_.size()), std::memory_order_release);
      }
      not_empty_.notify_one();
    }
  }

  Produce produce_;
  const int64_t stride_;
  const int64_t depth_;

  std::mutex mutex_;
  std::condition_variable not_empty_;  // the consumer waits for an item or an error
  std::condition_variable not_full_;   // the producer waits for room, a restart or the stop
  static constexpr std::chrono::microseconds kSpin{50};
  std::atomic<int64_t> ready_{0};  // queue_.size(), for pop() to look at without the lock
  std::deque<Item> queue_;         // guarded by mutex_, as are the four below
  std::exception_ptr error_;
  int64_t next_produced_;
  uint64_t generation_ = 0;
  bool stopping_ = false;

  int64_t next_popped_;  // consumer side only
  std::thread thread_;   // started last, once every member it uses exists
};

}  // namespace mlagpt::data
