// Low-rank projections in the model: ModelConfig::low_rank (parsing and its errors), a Gpt built from it, every
// projection of every attention variant and of the MLP factored exactly (at full rank) giving the dense model's
// logits, absorbed MLA decoding over a low-rank kv_up equal to naive decoding, and the product W = B A that
// absorbed decoding reads formed once per weight version.
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/linalg_svd.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn_like.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <cmath>

#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "launch/error.h"
#include "support/error_text.h"
#include "support/model_fixtures.h"

using mlagpt::model::AttentionKind;
using mlagpt::model::Gpt;
using mlagpt::model::LowRankLinear;
using mlagpt::model::MlaDecodeMode;
using mlagpt::model::ModelConfig;
using mlagpt::testing::relative_error;
using mlagpt::testing::tiny_config;

using mlagpt::testing::error_of;

namespace {

// Replaces the projection at `path` by its exact factorization at full rank: W = (U S^1/2)(S^1/2 V^T).
void factor_exactly(Gpt& model, const std::string& path) {
  const at::Tensor w = model.projection(path)->effective_weight().detach().clone();
  const at::Tensor bias = model.projection(path)->bias();
  const auto [u, s, vh] = at::linalg_svd(w.to(at::kDouble), /*full_matrices=*/false);
  const auto low_rank = model.factorize(path, s.size(0));
  const c10::NoGradGuard no_grad;
  low_rank->weight_b().copy_(u * s.sqrt());
  low_rank->weight_a().copy_(vh * s.sqrt().unsqueeze(1));
  if (bias.defined()) {
    EXPECT_TRUE(low_rank->bias().equal(bias)) << path << ": the bias is kept";
  }
}

ModelConfig variant(AttentionKind kind, bool q_lora) {
  ModelConfig config = tiny_config(kind);
  config.bias = true;
  if (kind == AttentionKind::kMla && !q_lora) {
    config.q_lora_rank = 0;
  }
  config.resolve();
  return config;
}

}  // namespace

TEST(LowRankConfig, ParsesFormatsAndNamesBadEntries) {
  const auto ranks = mlagpt::model::parse_low_rank("blocks.1.mlp.fc=7,blocks.0.attn.kv_up=3");
  ASSERT_EQ(ranks.size(), 2U);
  EXPECT_EQ(ranks.at("blocks.0.attn.kv_up"), 3);
  EXPECT_EQ(mlagpt::model::format_low_rank(ranks), "blocks.0.attn.kv_up=3,blocks.1.mlp.fc=7");  // name order
  EXPECT_TRUE(mlagpt::model::parse_low_rank("").empty());
  for (const std::string bad : {"blocks.0.mlp.fc", "blocks.0.mlp.fc=0", "=3", "blocks.0.mlp.fc=x"}) {
    EXPECT_NE(error_of([&] { mlagpt::model::parse_low_rank(bad); }).find("low_rank"), std::string::npos) << bad;
  }
  EXPECT_NE(error_of([] { mlagpt::model::parse_low_rank("a=1,a=2"); }).find("twice"), std::string::npos);
}

TEST(LowRankConfig, AGptBuiltFromItHoldsTheFactorsAndRefusesBadPathsAndRanks) {
  ModelConfig config = tiny_config(AttentionKind::kMla);
  config.low_rank = "blocks.0.mlp.fc=5,blocks.1.attn.kv_up=3";
  const Gpt model(config);
  EXPECT_EQ(model.config().low_rank, config.low_rank);
  const auto params = model.named_parameters();
  EXPECT_EQ(params["blocks.0.mlp.fc.weight_a"].sizes(), (std::vector<int64_t>{5, 32}));
  EXPECT_EQ(params["blocks.0.mlp.fc.weight_b"].sizes(), (std::vector<int64_t>{88, 5}));
  EXPECT_EQ(params["blocks.1.attn.kv_up.weight_a"].sizes(), (std::vector<int64_t>{3, 16}));
  EXPECT_EQ(params.find("blocks.0.mlp.fc.weight"), nullptr);
  EXPECT_TRUE(model.parameter_splits().contains("blocks.0.mlp.fc.weight_a"));
  EXPECT_FALSE(model.parameter_splits().contains("blocks.0.mlp.fc.weight"));
  // W = B A has the dense layer's initial std (0.02), not that of a product of two N(0, 0.02) factors. One draw of a
  // rank-5 product is a noisy estimate (its entries are correlated), and LibTorch seeds its default generator at
  // random per process: the std is pooled over models of 8 fixed seeds.
  double variance = 0;
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    at::manual_seed(seed);
    const Gpt drawn(config);
    variance += drawn.projection("blocks.0.mlp.fc")->effective_weight().var().item<double>() / 8;
  }
  EXPECT_NEAR(std::sqrt(variance), 0.02, 0.004);

  config.low_rank = "blocks.2.mlp.fc=5";  // two layers: 0 and 1
  EXPECT_NE(error_of([&] { Gpt bad(config); }).find("blocks.2.mlp.fc"), std::string::npos);
  config.low_rank = "blocks.0.attn.k_proj=5";                                      // MLA has no k_proj
  EXPECT_NE(error_of([&] { Gpt bad(config); }).find("kv_up"), std::string::npos);  // lists what it has
  config.low_rank = "blocks.0.attn.kv_up=17";  // kv_up is [4 * (8 + 6), 16]: rank at most 16
  EXPECT_NE(error_of([&] { Gpt bad(config); }).find("[1, 16]"), std::string::npos);
}

class EveryVariantLowRank : public testing::TestWithParam<std::tuple<AttentionKind, bool>> {};

TEST_P(EveryVariantLowRank, EveryProjectionFactoredExactlyGivesTheDenseLogits) {
  const auto [kind, q_lora] = GetParam();
  at::manual_seed(11);
  Gpt model(variant(kind, q_lora));
  mlagpt::testing::sharpen(model, 3.0);
  const at::Tensor idx = at::randint(0, 61, {2, 13}, at::kLong);
  const at::Tensor dense = model.forward(idx).detach();
  const std::vector<std::string> paths = model.projection_paths();
  // Attention's four (MLA: q_down/q_up or q_proj, kv_down, kv_up, o_proj) and the MLP's three, in both blocks.
  EXPECT_EQ(paths.size(), 2 * ((kind == AttentionKind::kMla && q_lora ? 5U : 4U) + 3U));
  for (const std::string& path : paths) {
    factor_exactly(model, path);
  }
  for (const std::string& path : paths) {
    EXPECT_EQ(model.named_parameters().find(path + ".weight"), nullptr) << path << " is still dense";
    EXPECT_NE(model.named_parameters().find(path + ".weight_a"), nullptr) << path;
  }
  EXPECT_LT(relative_error(model.forward(idx), dense), 1e-5);
  // The backward pass reaches every factor.
  model.loss(idx, idx).backward();
  for (const auto& item : model.named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_GT(item.value().grad().abs().max().item<double>(), 0.0) << item.key();
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, EveryVariantLowRank,
                         testing::Values(std::tuple{AttentionKind::kMha, false}, std::tuple{AttentionKind::kGqa, false},
                                         std::tuple{AttentionKind::kMqa, false}, std::tuple{AttentionKind::kMla, false},
                                         std::tuple{AttentionKind::kMla, true}));

TEST(LowRankDecoding, AbsorbedOverALowRankKvUpEqualsNaive) {
  at::manual_seed(12);
  ModelConfig config = tiny_config(AttentionKind::kMla);
  config.low_rank = "blocks.0.attn.kv_up=5,blocks.1.attn.kv_up=7";
  Gpt model(config);
  mlagpt::testing::sharpen(model, 3.0);
  model.eval();
  const c10::NoGradGuard no_grad;
  const at::Tensor idx = at::randint(0, 61, {2, 11}, at::kLong);
  const at::Tensor full = model.forward(idx);
  for (const MlaDecodeMode mode : {MlaDecodeMode::kNaive, MlaDecodeMode::kAbsorbed}) {
    auto cache = model.make_cache(2, 11, at::TensorOptions().dtype(at::kFloat), mode);
    model.forward(idx.narrow(1, 0, 4), &cache);
    std::vector<at::Tensor> steps;
    for (int64_t t = 4; t < 11; ++t) {
      steps.push_back(model.forward(idx.narrow(1, t, 1), &cache));
    }
    // As tests/model/kv_cache_test.cpp: float32 sums in another order, over sharpened weights.
    EXPECT_LT(relative_error(at::cat(steps, 1), full.narrow(1, 4, 7)), 1e-4) << static_cast<int>(mode);
  }
}

TEST(LowRankDecoding, TheProductIsFormedOncePerWeightVersion) {
  LowRankLinear projection(16, 24, 5, false);
  {
    const c10::NoGradGuard no_grad;
    projection.weight_a().normal_();
    projection.weight_b().normal_();
  }
  const c10::NoGradGuard no_grad;
  const at::Tensor first = projection.effective_weight();
  EXPECT_EQ(projection.effective_weight().data_ptr(), first.data_ptr()) << "formed again without a change";
  EXPECT_TRUE(first.equal(at::mm(projection.weight_b(), projection.weight_a())));
  projection.weight_a().mul_(2.0);  // an optimizer step, in place
  const at::Tensor second = projection.effective_weight();
  EXPECT_NE(second.data_ptr(), first.data_ptr());
  EXPECT_TRUE(second.equal(at::mm(projection.weight_b(), projection.weight_a())));
  // Under autograd it is formed every time, so gradients flow to both factors.
  const c10::AutoGradMode grad(true);
  projection.weight_a().set_requires_grad(true);
  EXPECT_TRUE(projection.effective_weight().requires_grad());
}
