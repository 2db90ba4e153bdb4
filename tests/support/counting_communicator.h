// A Communicator that forwards every collective to another one and counts what this rank hands it: the bytes of
// each all-reduce and broadcast tensor and of each all-gather and reduce-scatter input, and the number of calls. The
// sharded randomized SVD's tests and benchmark check these counts against the analytic volume (linalg/sharded_rsvd.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "launch/communicator.h"

namespace mlagpt::testing {

class CountingCommunicator final : public launch::Communicator {
 public:
  explicit CountingCommunicator(launch::Communicator& inner) : inner_(inner) {}

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::string backend() const override { return inner_.backend(); }

  void all_reduce(at::Tensor& tensor, launch::ReduceOp op) override {
    count(tensor);
    inner_.all_reduce(tensor, op);
  }
  void broadcast(at::Tensor& tensor, int root) override {
    count(tensor);
    inner_.broadcast(tensor, root);
  }
  void all_gather(const at::Tensor& input, at::Tensor& output) override {
    count(input);
    inner_.all_gather(input, output);
  }
  void reduce_scatter(const at::Tensor& input, at::Tensor& output, launch::ReduceOp op) override {
    count(input);
    inner_.reduce_scatter(input, output, op);
  }
  void barrier() override {
    ++calls_;
    inner_.barrier();
  }

  int64_t bytes() const { return bytes_; }
  int64_t calls() const { return calls_; }
  void reset() {
    bytes_ = 0;
    calls_ = 0;
  }

 private:
  void count(const at::Tensor& tensor) {
    bytes_ += static_cast<int64_t>(tensor.numel()) * static_cast<int64_t>(tensor.element_size());
    ++calls_;
  }

  launch::Communicator& inner_;
  int64_t bytes_ = 0;
  int64_t calls_ = 0;
};

}  // namespace mlagpt::testing
