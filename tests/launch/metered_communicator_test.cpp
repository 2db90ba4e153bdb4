// MeteredCommunicator counts each collective under its kind, with the bytes of its tensor and the host time blocked
// in it: a blocking call's whole duration, an async one's wait() only (not the time it ran while the caller worked).
#include "launch/metered_communicator.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <thread>

using mlagpt::launch::CollectiveKind;
using mlagpt::launch::CollectiveMeter;
using mlagpt::launch::Communicator;
using mlagpt::launch::MeteredCommunicator;
using mlagpt::launch::ReduceOp;
using mlagpt::launch::Work;

namespace {

constexpr auto kDelay = std::chrono::milliseconds(30);

// A Work whose wait() takes kDelay.
class SlowWork final : public Work {
 public:
  void wait() override { std::this_thread::sleep_for(kDelay); }
  bool test() override { return false; }
};

// A group of one whose all_reduce takes kDelay and whose async all_reduce returns at once with a SlowWork.
class SlowCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "slow"; }
  void all_reduce(at::Tensor& tensor, ReduceOp op) override {
    std::this_thread::sleep_for(kDelay);
    local_.all_reduce(tensor, op);
  }
  void broadcast(at::Tensor& tensor, int root) override { local_.broadcast(tensor, root); }
  void all_gather(const at::Tensor& input, at::Tensor& output) override { local_.all_gather(input, output); }
  void reduce_scatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) override {
    local_.reduce_scatter(input, output, op);
  }
  void barrier() override {}
  std::unique_ptr<Work> all_reduce_async(at::Tensor& /*tensor*/, ReduceOp /*op*/) override {
    return std::make_unique<SlowWork>();
  }

 private:
  mlagpt::launch::LocalCommunicator local_;
};

const CollectiveMeter::Row* find(const std::vector<CollectiveMeter::Row>& rows, const std::string& group,
                                 CollectiveKind kind) {
  for (const auto& row : rows) {
    if (row.group == group && row.kind == kind) {
      return &row;
    }
  }
  return nullptr;
}

}  // namespace

TEST(MeteredCommunicator, CountsEachKindWithItsBytesAndLeavesTheDataToTheInnerGroup) {
  CollectiveMeter meter;
  MeteredCommunicator comm(std::make_unique<mlagpt::launch::LocalCommunicator>(), "dp", meter);
  at::Tensor floats = at::arange(12, at::kFloat);  // 48 bytes
  const at::Tensor before = floats.clone();
  comm.all_reduce(floats, ReduceOp::kSum);
  comm.all_reduce(floats, ReduceOp::kMax);
  EXPECT_TRUE(at::equal(floats, before));
  at::Tensor doubles = at::arange(5, at::kDouble);  // 40 bytes
  comm.broadcast(doubles, 0);
  at::Tensor gathered = at::zeros({5}, at::kDouble);
  comm.all_gather(doubles, gathered);
  comm.all_gather_async(doubles, gathered)->wait();
  at::Tensor scattered = at::zeros({12}, at::kFloat);
  comm.reduce_scatter_async(floats, scattered, ReduceOp::kSum)->wait();
  comm.barrier();
  const auto rows = meter.rows();
  ASSERT_EQ(rows.size(), 5U);
  const auto* all_reduce = find(rows, "dp", CollectiveKind::kAllReduce);
  ASSERT_NE(all_reduce, nullptr);
  EXPECT_EQ(all_reduce->totals.count, 2);
  EXPECT_EQ(all_reduce->totals.bytes, 96);
  EXPECT_EQ(find(rows, "dp", CollectiveKind::kBroadcast)->totals.bytes, 40);
  EXPECT_EQ(find(rows, "dp", CollectiveKind::kAllGather)->totals.count, 2);  // async under its blocking kind
  EXPECT_EQ(find(rows, "dp", CollectiveKind::kAllGather)->totals.bytes, 80);
  EXPECT_EQ(find(rows, "dp", CollectiveKind::kReduceScatter)->totals.bytes, 48);
  EXPECT_EQ(find(rows, "dp", CollectiveKind::kBarrier)->totals.count, 1);
  EXPECT_STREQ(mlagpt::launch::to_string(CollectiveKind::kReduceScatter), "reduce_scatter");
}

TEST(MeteredCommunicator, SecondsAreTheTimeTheCallerWasBlocked) {
  CollectiveMeter meter;
  MeteredCommunicator dp(std::make_unique<SlowCommunicator>(), "dp", meter);
  MeteredCommunicator tp(std::make_unique<SlowCommunicator>(), "tp", meter);
  at::Tensor t = at::arange(4, at::kFloat);
  dp.all_reduce(t, ReduceOp::kSum);  // blocks for kDelay
  std::unique_ptr<Work> started = tp.all_reduce_async(t, ReduceOp::kSum);
  std::this_thread::sleep_for(3 * kDelay);  // the caller computes: not communication time
  EXPECT_LT(meter.total_seconds() - std::chrono::duration<double>(kDelay).count(), 0.02);
  started->wait();  // blocks for kDelay
  const auto rows = meter.rows();
  const double delay = std::chrono::duration<double>(kDelay).count();
  EXPECT_GE(find(rows, "dp", CollectiveKind::kAllReduce)->totals.seconds, delay);
  const double waited = find(rows, "tp", CollectiveKind::kAllReduce)->totals.seconds;
  EXPECT_GE(waited, delay);
  EXPECT_LT(waited, 3 * delay) << "the time between the start and wait() is the caller's, not the collective's";
  EXPECT_NEAR(meter.total_seconds(), find(rows, "dp", CollectiveKind::kAllReduce)->totals.seconds + waited, 1e-12);
}
