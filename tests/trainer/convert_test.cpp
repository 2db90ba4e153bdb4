// Converting MHA, GQA and MQA models into MLA (trainer/compression/convert.h): at full latent rank without RoPE
// the MLA model's logits are the source's (with and without biases); with RoPE the kept rotary pairs land on MLA's
// rope dimensions at the same frequencies (exact when the rest of the key is zero and the heads share their rope
// rows); at a lower rank the reported error is the factorization's; and the config rules name the bad value.
#include "trainer/compression/convert.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn_like.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include "support/error_text.h"
#include "support/model_fixtures.h"

using mlagpt::model::AttentionKind;
using mlagpt::model::Gpt;
using mlagpt::model::ModelConfig;
using mlagpt::model::PositionKind;
using mlagpt::testing::error_of;
using mlagpt::testing::relative_error;
using mlagpt::trainer::convert_to_mla;
using mlagpt::trainer::mla_config_for;

namespace {

// tiny_config's 32 wide, 4 heads of 8 (and GQA's 2 KV heads), 2 layers.
ModelConfig source_config(AttentionKind kind, PositionKind positions, bool bias) {
  ModelConfig config = mlagpt::testing::tiny_config(kind);
  config.positions = positions;
  config.bias = bias;
  config.resolve();
  return config;
}

}  // namespace

TEST(ConvertToMla, WithoutRopeAtFullRankTheLogitsAreTheSources) {
  for (const auto kind : {AttentionKind::kMha, AttentionKind::kGqa, AttentionKind::kMqa}) {
    for (const bool bias : {false, true}) {
      SCOPED_TRACE(std::string(mlagpt::model::to_string(kind)) + (bias ? " with biases" : ""));
      at::manual_seed(21);
      Gpt source(source_config(kind, PositionKind::kLearned, bias));
      mlagpt::testing::sharpen(source, 3.0);
      // [K; V] of 4 heads x (8 + 8) rows by 32 columns: rank 32 keeps everything.
      const ModelConfig mla = mla_config_for(source.config(), 32);
      EXPECT_EQ(mla.qk_rope_head_dim, 0);
      EXPECT_EQ(mla.qk_nope_head_dim, 8);
      EXPECT_EQ(mla.v_head_dim, 8);
      EXPECT_FALSE(mla.kv_norm);
      Gpt target(mla);
      const auto layers = convert_to_mla(source, target);
      ASSERT_EQ(layers.size(), 2U);
      EXPECT_NEAR(layers[0].kept_energy, 1.0, 1e-9);
      const c10::NoGradGuard no_grad;
      const at::Tensor idx = at::randint(0, 61, {2, 13}, at::kLong);
      EXPECT_LT(relative_error(target.forward(idx), source.forward(idx)), 1e-5);
    }
  }
}

TEST(ConvertToMla, KeptRotaryPairsKeepTheirFrequencies) {
  at::manual_seed(22);
  Gpt source(source_config(AttentionKind::kMha, PositionKind::kRope, true));
  mlagpt::testing::sharpen(source, 3.0);
  // Keys that only the kept pairs (0 and 2 of a head's 4, dims 0, 1, 4, 5, for rope-dim 4) carry, the same in
  // every head: then one shared RoPE key is exact, and so is the whole conversion.
  {
    const c10::NoGradGuard no_grad;
    for (int64_t layer = 0; layer < 2; ++layer) {
      auto k = source.projection("blocks." + std::to_string(layer) + ".attn.k_proj");
      at::Tensor w = k->effective_weight().view({4, 8, 32});
      const at::Tensor head0 = w[0].clone();
      for (int64_t h = 0; h < 4; ++h) {
        w[h].copy_(head0);
        for (const int64_t dim : {2, 3, 6, 7}) {
          w[h][dim].zero_();
        }
      }
      at::Tensor b = k->bias().view({4, 8});
      const at::Tensor bias0 = b[0].clone();
      for (int64_t h = 0; h < 4; ++h) {
        b[h].copy_(bias0);
        for (const int64_t dim : {2, 3, 6, 7}) {
          b[h][dim].zero_();
        }
      }
    }
  }
  const ModelConfig mla = mla_config_for(source.config(), 32, 4);
  EXPECT_EQ(mla.qk_rope_head_dim, 4);
  EXPECT_EQ(mla.qk_nope_head_dim, 4);
  Gpt target(mla);
  convert_to_mla(source, target);
  const c10::NoGradGuard no_grad;
  const at::Tensor idx = at::randint(0, 61, {2, 17}, at::kLong);
  EXPECT_LT(relative_error(target.forward(idx), source.forward(idx)), 1e-5);
}

TEST(ConvertToMla, ALowerRankReportsTheFactorizationsError) {
  at::manual_seed(23);
  Gpt source(source_config(AttentionKind::kGqa, PositionKind::kRope, false));
  double previous = -1;
  for (const int64_t rank : {32, 16, 8}) {
    Gpt target(mla_config_for(source.config(), rank));
    const auto layers = convert_to_mla(source, target);
    EXPECT_NEAR(layers[1].relative_error, std::sqrt(1 - layers[1].kept_energy), 1e-9);
    EXPECT_GT(layers[1].relative_error, previous) << rank;
    previous = layers[1].relative_error;
  }
  // Default rope dimensions: a quarter of the head width (8 / 4 = 2).
  EXPECT_EQ(mla_config_for(source.config(), 16).qk_rope_head_dim, 2);
}

TEST(ConvertToMla, BadSourcesAndOptionsAreNamed) {
  const ModelConfig mha = source_config(AttentionKind::kMha, PositionKind::kRope, false);
  EXPECT_NE(error_of([&] { mla_config_for(mlagpt::testing::tiny_config(AttentionKind::kMla), 8); }).find("MLA already"),
            std::string::npos);
  EXPECT_NE(error_of([&] { mla_config_for(mha, 8, 3); }).find("--rope-dim 3"), std::string::npos);
  EXPECT_NE(error_of([&] { mla_config_for(mha, 8, 8); }).find("--rope-dim 8"), std::string::npos);
  EXPECT_NE(error_of([&] { mla_config_for(mha, 0); }).find("--kv-lora-rank 0"), std::string::npos);
  EXPECT_NE(error_of([&] { mla_config_for(mha, 33); }).find("[1, 32]"), std::string::npos);
  const ModelConfig learned = source_config(AttentionKind::kMha, PositionKind::kLearned, false);
  EXPECT_NE(error_of([&] { mla_config_for(learned, 8, 2); }).find("learned positions"), std::string::npos);
}
