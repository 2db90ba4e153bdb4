// FlatAdamW and its layout on one process: the bucket plan (packing order, alignment, padding, shards that cover
// every element once), the parameters and gradients as views of the flat buffers, parity over 20 steps with
// PyTorch's AdamW (tests/reference/adamw_reference.py) and with LibTorch's torch::optim::AdamW (the optimizer it
// replaced), skipping on found_inf and clipping, all on the device; the squared gradient norm leaving out the
// replicas another tensor-parallel rank counts, replicated and on a ZeRO-1 shard.
#include <ATen/ops/full.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "data/hdf5_file.h"
#include "launch/error.h"
#include "support/model_fixtures.h"
#include "trainer/parallel/flat_adamw.h"

namespace {

using mlagpt::trainer::AdamWSettings;
using mlagpt::trainer::FlatAdamW;
using mlagpt::trainer::FlatLayout;
using mlagpt::trainer::FlatOptions;
using mlagpt::trainer::NamedParameter;
using mlagpt::trainer::ParameterInfo;
using mlagpt::trainer::plan_flat_layout;

// Unrelated sizes, groups interleaved as in a model.
std::vector<ParameterInfo> some_parameters() {
  return {{"wte.weight", {37, 40}, false},
          {"blocks.0.norm1.weight", {40}, false},
          {"blocks.0.attn.q.weight", {24, 40}, true},
          {"blocks.0.mlp.fc.weight", {3, 56, 5}, true},
          {"blocks.0.mlp.fc.bias", {56}, false},
          {"blocks.1.attn.q.weight", {24, 40}, true},
          {"norm_f.weight", {40}, false}};
}

TEST(FlatLayout, PacksInReverseOrderIntoAlignedBucketsOfTheirGroup) {
  // 1200 floats per bucket: the 960-element matrices fill one each with what follows them.
  const FlatLayout layout = plan_flat_layout(some_parameters(), 1200 * 4, 3);
  ASSERT_EQ(layout.groups.size(), 2U);
  EXPECT_TRUE(layout.groups[0].decay);
  EXPECT_FALSE(layout.groups[1].decay);
  // Backward reaches the last parameters first: blocks.1.attn.q (the last decayed) opens bucket 0.
  const auto& first = layout.buckets[0];
  ASSERT_FALSE(first.params.empty());
  EXPECT_EQ(layout.params[static_cast<size_t>(first.params.front())].name, "blocks.1.attn.q.weight");
  std::set<int> seen;
  for (size_t b = 0; b < layout.buckets.size(); ++b) {
    const auto& bucket = layout.buckets[b];
    EXPECT_EQ(bucket.numel % (FlatLayout::kAlignment * 3), 0) << "bucket " << b;
    int64_t end = bucket.offset;
    for (const int index : bucket.params) {
      const auto& p = layout.params[static_cast<size_t>(index)];
      EXPECT_EQ(p.bucket, static_cast<int>(b));
      EXPECT_EQ(p.group, bucket.group);
      EXPECT_EQ(p.offset % FlatLayout::kAlignment, 0) << p.name;
      EXPECT_GE(p.offset, end) << p.name << " overlaps the parameter before it";
      end = p.offset + p.numel;
      EXPECT_TRUE(seen.insert(index).second);
    }
    EXPECT_LE(end, bucket.offset + bucket.numel);
  }
  EXPECT_EQ(seen.size(), layout.params.size());
  // Every element of every parameter belongs to exactly one shard.
  std::vector<std::vector<int>> owners(layout.params.size());
  for (size_t i = 0; i < layout.params.size(); ++i) {
    owners[i].assign(static_cast<size_t>(layout.params[i].numel), 0);
  }
  for (size_t b = 0; b < layout.buckets.size(); ++b) {
    for (int64_t s = 0; s < layout.shards; ++s) {
      for (const auto& range : layout.shard_ranges(static_cast<int>(b), s)) {
        EXPECT_LT(range.begin, range.end);
        for (int64_t e = range.begin; e < range.end; ++e) {
          ++owners[static_cast<size_t>(range.param)][static_cast<size_t>(e)];
        }
      }
    }
  }
  for (size_t i = 0; i < layout.params.size(); ++i) {
    EXPECT_TRUE(std::all_of(owners[i].begin(), owners[i].end(), [](int n) { return n == 1; })) << layout.params[i].name;
  }
  EXPECT_EQ(layout.parameter_numel(), 37 * 40 + 40 + 24 * 40 + 3 * 56 * 5 + 56 + 24 * 40 + 40);
  EXPECT_GE(layout.padded_numel(), layout.parameter_numel());
}

TEST(FlatLayout, OneBucketPerGroupWhenTheBucketsAreLarge) {
  const FlatLayout layout = plan_flat_layout(some_parameters(), 25 << 20, 1);
  EXPECT_EQ(layout.buckets.size(), 2U);
}

TEST(FlatLayout, RefusesEmptyAndRepeatedParameters) {
  EXPECT_THROW(plan_flat_layout({}, 1024, 1), mlagpt::Error);
  EXPECT_THROW(plan_flat_layout({{"a", {3}, true}, {"a", {5}, true}}, 1024, 1), mlagpt::Error);
  EXPECT_THROW(plan_flat_layout({{"a", {3}, true}}, 1024, 0), mlagpt::Error);
}

std::vector<NamedParameter> leaves(const std::vector<ParameterInfo>& infos) {
  std::vector<NamedParameter> out;
  for (const auto& info : infos) {
    out.push_back({info.name, at::randn(info.shape).requires_grad_(true), info.decay});
  }
  return out;
}

TEST(FlatAdamW, ParametersAndGradientsAreViewsOfTheFlatBuffers) {
  mlagpt::launch::LocalCommunicator local;
  std::vector<NamedParameter> parameters = leaves(some_parameters());
  std::vector<at::Tensor> before;
  for (const auto& p : parameters) {
    before.push_back(p.tensor.detach().clone());
  }
  FlatAdamW optimizer(parameters, AdamWSettings{}, FlatOptions{.bucket_bytes = 1200 * 4}, local);
  for (size_t i = 0; i < parameters.size(); ++i) {
    EXPECT_TRUE(parameters[i].tensor.equal(before[i])) << "the values survive the move into the flat buffer";
  }
  const auto& p = optimizer.layout().params[3];
  const at::Tensor bucket = optimizer.bucket_params(p.bucket);
  {
    const c10::NoGradGuard no_grad;
    bucket.fill_(7.0);
  }
  EXPECT_TRUE(parameters[3].tensor.eq(7.0).all().item<bool>());
  // Backward accumulates into the gradient buffer, over two passes.
  const at::Tensor loss = (parameters[3].tensor * 2.0).sum() + (parameters[4].tensor * 3.0).sum();
  loss.backward();
  (parameters[3].tensor * 2.0).sum().backward();
  EXPECT_TRUE(optimizer.bucket_grads(p.bucket)
                  .narrow(0, p.offset - optimizer.layout().buckets[static_cast<size_t>(p.bucket)].offset, p.numel)
                  .eq(4.0)
                  .all()
                  .item<bool>());
  optimizer.zero_grad();
  EXPECT_TRUE(parameters[3].tensor.grad().eq(0.0).all().item<bool>());
}

TEST(FlatAdamW, RefusesParametersThatAreNotFloat32) {
  mlagpt::launch::LocalCommunicator local;
  std::vector<NamedParameter> parameters = {
      {"blocks.0.w", at::randn({3, 5}).requires_grad_(true), true},
      {"blocks.0.half", at::randn({7}).to(at::kBFloat16).requires_grad_(true), false}};
  EXPECT_THAT([&] { FlatAdamW(parameters, AdamWSettings{}, FlatOptions{}, local); },
              testing::ThrowsMessage<mlagpt::Error>(testing::HasSubstr("blocks.0.half")));
}

struct Reference {
  mlagpt::data::h5::File file;
  nlohmann::json settings;
  std::vector<ParameterInfo> infos;
  std::vector<double> lrs;
};

Reference open_reference() {
  Reference r{mlagpt::data::h5::File::open(std::string(MLAGPT_FIXTURES_DIR) + "/adamw_reference.h5"), {}, {}, {}};
  EXPECT_EQ(r.file.string_attribute("format"), "mlagpt.adamw_reference");
  r.settings = nlohmann::json::parse(r.file.string_attribute("settings"));
  for (const auto& p : r.settings["parameters"]) {
    r.infos.push_back({p["name"], p["shape"].get<std::vector<int64_t>>(), p["decay"]});
  }
  r.lrs = r.file.open_dataset("/lrs").read_all<double>();
  return r;
}

void run_reference_steps(const Reference& r, FlatAdamW& optimizer, std::vector<NamedParameter>& parameters) {
  const at::Tensor no_inf = at::zeros({}, at::kFloat);
  for (size_t step = 0; step < r.lrs.size(); ++step) {
    optimizer.zero_grad();
    for (auto& p : parameters) {
      p.tensor.mutable_grad().copy_(
          mlagpt::testing::read_float_tensor(r.file, "/grads/" + std::to_string(step) + "/" + p.name));
    }
    if (optimizer.zero()) {
      // What GradReducer does with ZeRO-1: each bucket's shard of the summed gradients goes to the optimizer.
      for (size_t b = 0; b < optimizer.layout().buckets.size(); ++b) {
        at::Tensor shard = optimizer.shard_grads(static_cast<int>(b));
        optimizer.comm().reduce_scatter(optimizer.bucket_grads(static_cast<int>(b)), shard,
                                        mlagpt::launch::ReduceOp::kSum);
      }
    }
    optimizer.step(r.lrs[step], std::nullopt, no_inf);
  }
}

TEST(FlatAdamW, MatchesPyTorchAdamWOverTwentySteps) {
  const Reference r = open_reference();
  mlagpt::launch::LocalCommunicator local;
  for (const bool zero : {false, true}) {
    std::vector<NamedParameter> parameters;
    for (const auto& info : r.infos) {
      parameters.push_back({info.name,
                            mlagpt::testing::read_float_tensor(r.file, "/init/" + info.name).requires_grad_(true),
                            info.decay});
    }
    const AdamWSettings settings{.beta1 = r.settings["beta1"],
                                 .beta2 = r.settings["beta2"],
                                 .eps = r.settings["eps"],
                                 .weight_decay = r.settings["weight_decay"]};
    // Small buckets: several per group, parameters at padded offsets.
    FlatAdamW optimizer(parameters, settings, FlatOptions{.bucket_bytes = 2048 * 4, .zero = zero}, local);
    run_reference_steps(r, optimizer, parameters);
    EXPECT_EQ(optimizer.step_count(), static_cast<int64_t>(r.lrs.size()));
    double worst = 0;
    for (const auto& p : parameters) {
      const double error = mlagpt::testing::relative_error(
          p.tensor.detach(), mlagpt::testing::read_float_tensor(r.file, "/final/" + p.name));
      EXPECT_LE(error, 1e-6) << p.name;
      worst = std::max(worst, error);
    }
    for (const auto& slice : optimizer.held_slices()) {
      const std::string& name = parameters[static_cast<size_t>(slice.param)].name;
      const at::Tensor m = mlagpt::testing::read_float_tensor(r.file, "/exp_avg/" + name).reshape({-1});
      const at::Tensor v = mlagpt::testing::read_float_tensor(r.file, "/exp_avg_sq/" + name).reshape({-1});
      EXPECT_LE(mlagpt::testing::relative_error(slice.exp_avg, m.slice(0, slice.begin, slice.end)), 1e-6) << name;
      EXPECT_LE(mlagpt::testing::relative_error(slice.exp_avg_sq, v.slice(0, slice.begin, slice.end)), 1e-6) << name;
    }
    std::printf("[adamw parity] zero=%d: 20 steps, worst relative error of the parameters %.2e\n", zero ? 1 : 0, worst);
  }
}

TEST(FlatAdamW, MatchesLibTorchAdamWOverTwentySteps) {
  const Reference r = open_reference();
  mlagpt::launch::LocalCommunicator local;
  std::vector<NamedParameter> parameters;
  std::vector<at::Tensor> decay;
  std::vector<at::Tensor> no_decay;
  std::vector<at::Tensor> plain;
  for (const auto& info : r.infos) {
    const at::Tensor init = mlagpt::testing::read_float_tensor(r.file, "/init/" + info.name);
    parameters.push_back({info.name, init.clone().requires_grad_(true), info.decay});
    plain.push_back(init.clone().requires_grad_(true));
    (info.decay ? decay : no_decay).push_back(plain.back());
  }
  const AdamWSettings settings{.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
  FlatAdamW optimizer(parameters, settings, FlatOptions{}, local);
  const auto options = [](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(1e-3).betas({0.9, 0.95}).eps(1e-8).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, options(0.1));
  groups.emplace_back(no_decay, options(0.0));
  torch::optim::AdamW libtorch(groups, *options(0.1));
  run_reference_steps(r, optimizer, parameters);
  for (size_t step = 0; step < r.lrs.size(); ++step) {
    for (auto& group : libtorch.param_groups()) {
      group.options().set_lr(r.lrs[step]);
    }
    for (size_t i = 0; i < plain.size(); ++i) {
      plain[i].mutable_grad() =
          mlagpt::testing::read_float_tensor(r.file, "/grads/" + std::to_string(step) + "/" + r.infos[i].name);
    }
    libtorch.step();
  }
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_LE(mlagpt::testing::relative_error(parameters[i].tensor.detach(), plain[i].detach()), 1e-6)
        << r.infos[i].name;
  }
}

TEST(FlatAdamW, FoundInfSkipsTheUpdateAndTheStepCount) {
  mlagpt::launch::LocalCommunicator local;
  for (const bool zero : {false, true}) {
    std::vector<NamedParameter> parameters = leaves(some_parameters());
    FlatAdamW optimizer(parameters, AdamWSettings{}, FlatOptions{.bucket_bytes = 1200 * 4, .zero = zero}, local);
    for (auto& p : parameters) {
      p.tensor.mutable_grad().copy_(at::randn(p.tensor.sizes()));
    }
    optimizer.step(1e-2, std::nullopt, at::zeros({}, at::kFloat));
    std::vector<at::Tensor> values;
    std::vector<at::Tensor> moments;
    for (auto& p : parameters) {
      values.push_back(p.tensor.detach().clone());
    }
    for (const auto& slice : optimizer.held_slices()) {
      moments.push_back(slice.exp_avg_sq.clone());
    }
    for (auto& p : parameters) {
      p.tensor.mutable_grad().fill_(std::numeric_limits<float>::quiet_NaN());
    }
    optimizer.step(1e-2, std::nullopt, at::ones({}, at::kFloat));
    EXPECT_EQ(optimizer.step_count(), 1);
    for (size_t i = 0; i < parameters.size(); ++i) {
      EXPECT_TRUE(parameters[i].tensor.detach().equal(values[i])) << parameters[i].name;
    }
    const auto slices = optimizer.held_slices();
    for (size_t i = 0; i < slices.size(); ++i) {
      EXPECT_TRUE(slices[i].exp_avg_sq.equal(moments[i]));
    }
  }
}

// Rank 1 of 3 data-parallel ranks that never communicate: FlatAdamW plans its shards with it, and nothing here calls
// a collective.
class ShardOneOfThree final : public mlagpt::launch::Communicator {
 public:
  int rank() const override { return 1; }
  int size() const override { return 3; }
  std::string backend() const override { return "none"; }
  void all_reduce(at::Tensor& /*tensor*/, mlagpt::launch::ReduceOp /*op*/) override { refuse(); }
  void broadcast(at::Tensor& /*tensor*/, int /*root*/) override { refuse(); }
  void all_gather(const at::Tensor& /*input*/, at::Tensor& /*output*/) override { refuse(); }
  void reduce_scatter(const at::Tensor& /*input*/, at::Tensor& /*output*/, mlagpt::launch::ReduceOp /*op*/) override {
    refuse();
  }
  void barrier() override { refuse(); }

 private:
  [[noreturn]] static void refuse() { throw mlagpt::Error("ShardOneOfThree: no collectives in this test"); }
};

// Under tensor parallelism a replicated parameter is counted in the global norm by one rank of the group only: the
// others leave it out (in_grad_norm = false), whether it starts a group's buffer, lies between counted ones or ends
// it, and on a ZeRO-1 shard also where it straddles the shard's edge.
TEST(FlatAdamW, GradSquareSumLeavesOutTheParametersThisRankDoesNotCount) {
  const std::set<std::string> left_out = {"wte.weight", "blocks.0.mlp.fc.weight", "norm_f.weight"};
  mlagpt::launch::LocalCommunicator local;
  ShardOneOfThree shard_one;
  for (const bool zero : {false, true}) {
    SCOPED_TRACE(zero ? "ZeRO-1, shard 1 of 3" : "replicated");
    std::vector<NamedParameter> parameters = leaves(some_parameters());
    for (auto& p : parameters) {
      p.in_grad_norm = left_out.count(p.name) == 0;
    }
    mlagpt::launch::Communicator& comm = zero ? static_cast<mlagpt::launch::Communicator&>(shard_one) : local;
    FlatAdamW optimizer(parameters, AdamWSettings{}, FlatOptions{.bucket_bytes = 1200 * 4, .zero = zero}, comm);
    for (auto& p : parameters) {
      p.tensor.mutable_grad().copy_(at::randn(p.tensor.sizes()));
    }
    const FlatLayout& layout = optimizer.layout();
    if (zero) {
      // What the reduce-scatter leaves rank 1: shard 1 of every bucket (this rank's gradients stand for the sum).
      for (size_t b = 0; b < layout.buckets.size(); ++b) {
        const int bucket = static_cast<int>(b);
        optimizer.shard_grads(bucket).copy_(
            optimizer.bucket_grads(bucket).narrow(0, layout.shard_numel(bucket), layout.shard_numel(bucket)));
      }
    }
    // The elements this rank updates (all, or those in shard 1 of their bucket), counted or not.
    double counted = 0;
    double uncounted = 0;
    for (size_t i = 0; i < parameters.size(); ++i) {
      const auto& p = layout.params[i];
      int64_t begin = p.offset;
      int64_t end = p.offset + p.numel;
      if (zero) {
        const int64_t shard_begin = layout.shard_offset(p.bucket, 1);
        begin = std::max(begin, shard_begin);
        end = std::min(end, shard_begin + layout.shard_numel(p.bucket));
      }
      if (begin >= end) {
        continue;
      }
      const double sum = parameters[i]
                             .tensor.grad()
                             .reshape({-1})
                             .narrow(0, begin - p.offset, end - begin)
                             .to(at::kDouble)
                             .square()
                             .sum()
                             .item<double>();
      (parameters[i].in_grad_norm ? counted : uncounted) += sum;
    }
    ASSERT_GT(uncounted, 0) << "the fixture must leave something out of what this rank updates";
    EXPECT_NEAR(optimizer.grad_square_sum().item<double>(), counted, 1e-6 * counted);
  }
}

TEST(FlatAdamW, ClipCoefficientScalesTheGradients) {
  mlagpt::launch::LocalCommunicator local;
  std::vector<NamedParameter> a = leaves(some_parameters());
  std::vector<NamedParameter> b;
  for (const auto& p : a) {
    b.push_back({p.name, p.tensor.detach().clone().requires_grad_(true), p.decay});
  }
  FlatAdamW clipped(a, AdamWSettings{.weight_decay = 0}, FlatOptions{}, local);
  FlatAdamW scaled(b, AdamWSettings{.weight_decay = 0}, FlatOptions{}, local);
  for (size_t i = 0; i < a.size(); ++i) {
    const at::Tensor g = at::randn(a[i].tensor.sizes());
    a[i].tensor.mutable_grad().copy_(g);
    b[i].tensor.mutable_grad().copy_(g * 0.25);
  }
  // eps = 1e-8 makes the update scale-dependent, which is what shows the coefficient was applied.
  clipped.step(1e-2, at::full({}, 0.25, at::kFloat), at::zeros({}, at::kFloat));
  scaled.step(1e-2, std::nullopt, at::zeros({}, at::kFloat));
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(a[i].tensor.detach().equal(b[i].tensor.detach())) << a[i].name;
  }
  EXPECT_GT(clipped.state_bytes(), 0);
}

}  // namespace
