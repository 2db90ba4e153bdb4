// Attention variants: causality, the GQA/MHA/MQA equivalences, RoPE against complex numbers, odd shapes,
// LowRankLinear standing in for a dense projection, and configuration errors.
#include <ATen/TensorOperators.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/linalg_svd.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <complex>

#include "launch/error.h"
#include "model/rope.h"
#include "support/model_fixtures.h"

using mlagpt::model::AttentionKind;
using mlagpt::model::Gpt;
using mlagpt::model::ModelConfig;
using mlagpt::testing::relative_error;
using mlagpt::testing::tiny_config;

namespace {

void copy_parameters(Gpt& from, Gpt& to) {
  const c10::NoGradGuard no_grad;
  auto source = from.named_parameters();
  for (auto& item : to.named_parameters()) {
    item.value().copy_(source[item.key()]);
  }
}

}  // namespace

class EveryVariant : public testing::TestWithParam<AttentionKind> {};

TEST_P(EveryVariant, ChangingAFutureTokenLeavesPastLogitsUnchanged) {
  at::manual_seed(3);
  Gpt model(tiny_config(GetParam()));
  mlagpt::testing::sharpen(model, 5.0);
  model.eval();
  const c10::NoGradGuard no_grad;
  at::Tensor idx = at::randint(0, 61, {2, 12}, at::kLong);
  const at::Tensor before = model.forward(idx);
  idx.select(1, 7).fill_(5);
  const at::Tensor after = model.forward(idx);
  EXPECT_LT(relative_error(after.narrow(1, 0, 7), before.narrow(1, 0, 7)), 1e-6);
  EXPECT_GT(relative_error(after.narrow(1, 7, 5), before.narrow(1, 7, 5)), 1e-3);  // the future did change
}

TEST_P(EveryVariant, OddSizesGiveExpectedShapes) {
  ModelConfig c;
  c.vocab_size = 97;
  c.block_size = 13;
  c.n_layer = 3;
  c.n_embd = 36;
  c.n_head = 6;  // Dh = 6
  c.attention = GetParam();
  c.n_kv_head = GetParam() == AttentionKind::kGqa ? 3 : 0;
  c.q_lora_rank = 11;
  c.kv_lora_rank = 7;
  c.qk_nope_head_dim = 5;
  c.qk_rope_head_dim = 2;
  c.v_head_dim = 3;
  c.mlp_hidden = 50;
  Gpt model(c);
  const at::Tensor logits = model.forward(at::randint(0, 97, {3, 7}, at::kLong));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 7, 97}));
  EXPECT_THROW(model.forward(at::randint(0, 97, {1, 14}, at::kLong)), mlagpt::Error);  // beyond block_size
}

INSTANTIATE_TEST_SUITE_P(Attention, EveryVariant,
                         testing::Values(AttentionKind::kMha, AttentionKind::kGqa, AttentionKind::kMqa,
                                         AttentionKind::kMla));

TEST(Attention, GqaWithAllHeadsEqualsMhaAndWithOneEqualsMqa) {
  at::manual_seed(4);
  const at::Tensor idx = at::randint(0, 61, {2, 10}, at::kLong);
  for (const auto& [kv_heads, other_kind] : {std::pair{4L, AttentionKind::kMha}, std::pair{1L, AttentionKind::kMqa}}) {
    ModelConfig gqa = tiny_config(AttentionKind::kGqa);
    gqa.n_kv_head = kv_heads;
    gqa.resolve();
    Gpt other(tiny_config(other_kind));
    mlagpt::testing::sharpen(other, 5.0);
    Gpt grouped(gqa);
    copy_parameters(other, grouped);
    EXPECT_LT(relative_error(grouped.forward(idx), other.forward(idx)), 1e-6) << "n_kv_head " << kv_heads;
  }
}

TEST(Rope, InterleavedPairsMatchComplexRotation) {
  at::manual_seed(5);
  const double theta = 500.0;
  const int64_t start = 3;
  const at::Tensor x = at::randn({2, 5, 3, 8}, at::kDouble);  // [B, T, H, D]
  const at::Tensor rotated = mlagpt::model::rope_apply_interleaved(x, start, theta);
  const auto in = x.accessor<double, 4>();
  const auto out = rotated.accessor<double, 4>();
  double worst = 0;
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t t = 0; t < 5; ++t) {
      for (int64_t h = 0; h < 3; ++h) {
        for (int64_t i = 0; i < 4; ++i) {
          const double angle = static_cast<double>(start + t) * std::pow(theta, -2.0 * i / 8.0);
          const std::complex<double> z =
              std::complex<double>(in[b][t][h][2 * i], in[b][t][h][2 * i + 1]) * std::polar(1.0, angle);
          worst =
              std::max({worst, std::abs(z.real() - out[b][t][h][2 * i]), std::abs(z.imag() - out[b][t][h][2 * i + 1])});
        }
      }
    }
  }
  EXPECT_LT(worst, 1e-12);
}

// The cached table against the plain rotation: within one rounding for float32 and float64 (complex multiply),
// bitwise for bfloat16 (the same real arithmetic), for a contiguous x, MLA's shared key, and a strided slice of a
// wider tensor (MLA's q_rope, the last Dr of each head's Dn + Dr) at odd and even offsets.
TEST(Rope, CachedTableIsThePlainRotation) {
  at::manual_seed(7);
  const double theta = 700.0;
  const mlagpt::model::RotaryTable table(6, 23, theta);
  for (const at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16}) {
    const double tolerance = dtype == at::kFloat ? 1e-6 : dtype == at::kDouble ? 1e-14 : 0.0;
    for (const int64_t start : {0L, 4L, 17L}) {
      const int64_t T = 23 - start;
      const at::Tensor x = at::randn({3, T, 2, 6}).to(dtype);    // [B, T, H, D], the last T positions
      const at::Tensor shared = at::randn({2, T, 6}).to(dtype);  // [B, T, D]: MLA's shared rope key
      const at::Tensor even_slice = at::randn({2, T, 3, 10}).to(dtype).narrow(-1, 4, 6);  // [B, T, H, Dn = 4 + Dr]
      const at::Tensor odd_slice = at::randn({2, T, 3, 9}).to(dtype).narrow(-1, 3, 6);    // odd offset and strides
      for (const at::Tensor& input : {x, shared, even_slice, odd_slice}) {
        const at::Tensor expected = mlagpt::model::rope_apply_interleaved(input, start, theta);
        const at::Tensor got = table.apply(input, start);
        ASSERT_EQ(got.sizes(), expected.sizes());
        if (tolerance == 0.0) {
          EXPECT_TRUE(at::equal(got, expected)) << dtype << " start " << start;
        } else {
          EXPECT_LE((got - expected).abs().max().item<double>(), tolerance) << dtype << " start " << start;
        }
      }
    }
  }
  EXPECT_THROW(table.apply(at::randn({1, 5, 6}), 19), mlagpt::Error);  // positions 19..23 > 23
  EXPECT_THROW(table.apply(at::randn({1, 5, 8}), 0), mlagpt::Error);   // another width
}

// MLA's query table: the first 10 values of each head pass through bitwise, the last 6 are the 6-wide rotation.
TEST(Rope, UnrotatedPrefixPassesThrough) {
  at::manual_seed(8);
  const mlagpt::model::RotaryTable table(6, 23, 700.0, /*unrotated=*/10);
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const at::Tensor x = at::randn({2, 19, 3, 16}).to(dtype);  // [B, T, H, Dn + Dr]
    const at::Tensor got = table.apply(x, 4);
    EXPECT_TRUE(at::equal(got.narrow(-1, 0, 10), x.narrow(-1, 0, 10))) << dtype;
    const at::Tensor rotated = mlagpt::model::rope_apply_interleaved(x.narrow(-1, 10, 6), 4, 700.0);
    EXPECT_LE((got.narrow(-1, 10, 6) - rotated).abs().max().item<double>(), 1e-6) << dtype;
  }
  EXPECT_THROW(mlagpt::model::RotaryTable(6, 23, 700.0, 5), mlagpt::Error);  // pairs need an even prefix
}

TEST(Rope, TableFirstBuiltWhileSamplingServesTraining) {
  const mlagpt::model::RotaryTable table(4, 9, 10000.0);
  {
    const c10::InferenceMode sampling;
    (void)table.apply(at::randn({1, 1, 4}), 8);
  }
  const at::Tensor x = at::randn({2, 9, 4}).requires_grad_(true);
  table.apply(x, 0).square().sum().backward();  // an inference-mode table could not be saved for backward
  ASSERT_TRUE(x.grad().defined());
  EXPECT_GT(x.grad().abs().sum().item<double>(), 0.0);
}

TEST(LowRankLinear, StandsInForADenseProjection) {
  at::manual_seed(6);
  Gpt model(tiny_config(AttentionKind::kMla));
  const at::Tensor idx = at::randint(0, 61, {1, 9}, at::kLong);
  const at::Tensor before = model.forward(idx);
  auto& attention = model.block(1).attention();
  const auto dense = attention.projection("o_proj");
  // Exact factorization at full rank: W = (U S) V^T with A = V^T [r, in], B = U S [out, r].
  const auto [u, s, vh] = at::linalg_svd(dense->effective_weight().detach(), /*full_matrices=*/false);
  auto low_rank =
      std::make_shared<mlagpt::model::LowRankLinear>(dense->in_features(), dense->out_features(), s.size(0), false);
  {
    const c10::NoGradGuard no_grad;
    low_rank->weight_a().copy_(vh);
    low_rank->weight_b().copy_(u * s);
  }
  attention.replace_projection("o_proj", low_rank);
  EXPECT_LT(relative_error(model.forward(idx), before), 1e-5);
  bool found = false;
  for (const auto& item : model.named_parameters()) {
    found = found || item.key() == "blocks.1.attn.o_proj.weight_a";
  }
  EXPECT_TRUE(found) << "the low-rank factors are the model's parameters";
  auto wrong = std::make_shared<mlagpt::model::LowRankLinear>(3, 5, 2, false);
  EXPECT_THROW(attention.replace_projection("o_proj", wrong), mlagpt::Error);
}

namespace {

void expect_config_error(ModelConfig config, const std::string& fragment) {
  try {
    config.resolve();
    FAIL() << "no error for: " << fragment;
  } catch (const mlagpt::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(ModelConfig, BadConfigsNameTheRuleAndValues) {
  ModelConfig c = tiny_config(AttentionKind::kMha);
  c.n_embd = 30;  // 30 % 4 != 0
  expect_config_error(c, "n_embd (30) must be divisible by n_head (4)");
  c = tiny_config(AttentionKind::kMha);
  c.n_embd = 36;  // Dh = 9, odd, with RoPE
  expect_config_error(c, "head_dim = n_embd / n_head = 36 / 4 = 9 must be even");
  c = tiny_config(AttentionKind::kMla);
  c.qk_rope_head_dim = 3;
  expect_config_error(c, "qk_rope_head_dim (3) must be even");
  c = tiny_config(AttentionKind::kMla);
  c.kv_lora_rank = 0;
  expect_config_error(c, "kv_lora_rank > 0, got 0");
  c = tiny_config(AttentionKind::kGqa);
  c.n_kv_head = 3;
  expect_config_error(c, "n_head (4) must be divisible by n_kv_head (3)");
  c = tiny_config(AttentionKind::kMha);
  c.dropout = 1.5;
  expect_config_error(c, "dropout must be in [0, 1), got 1.5");
}

TEST(ModelConfig, JsonRoundTripAndUnknownKeys) {
  const ModelConfig c = tiny_config(AttentionKind::kMla);
  const ModelConfig back = mlagpt::model::model_config_from_json(mlagpt::model::to_json(c), "test");
  EXPECT_EQ(mlagpt::model::describe_differences(c, back), "");
  nlohmann::json json = mlagpt::model::to_json(c);
  json["n_heads"] = 4;
  EXPECT_THROW(mlagpt::model::model_config_from_json(json, "test"), mlagpt::ConfigError);
  json = mlagpt::model::to_json(c);
  json["n_layer"] = "two";
  try {
    mlagpt::model::model_config_from_json(json, "ckpt/metadata.json");
    FAIL();
  } catch (const mlagpt::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("ckpt/metadata.json: n_layer must be an integer"), std::string::npos)
        << e.what();
  }
  ModelConfig other = c;
  other.n_head = 8;
  EXPECT_EQ(mlagpt::model::describe_differences(c, other), "n_head: 4 != 8");
}
