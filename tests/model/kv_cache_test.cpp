// Incremental decoding with a KV cache gives the logits of a full forward over the whole sequence, for every
// attention variant; MLA's absorbed decoding equals its naive decoding; caches hold what docs/mla.md ("What the KV
// cache holds") says they hold. float32 on the CPU; tolerance 1e-4 relative (the issue's bound). The errors reached
// are printed.
#include <ATen/ops/cat.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/randint.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <cstdio>

#include "launch/error.h"
#include "support/model_fixtures.h"

using mlagpt::model::AttentionKind;
using mlagpt::model::Gpt;
using mlagpt::model::MlaDecodeMode;
using mlagpt::testing::relative_error;
using mlagpt::testing::tiny_config;

namespace {

constexpr double kTolerance = 1e-4;

// Runs idx through the cache in chunks of the given sizes and concatenates the logits.
at::Tensor decode_in_chunks(Gpt& model, const at::Tensor& idx, const std::vector<int64_t>& chunks, MlaDecodeMode mode) {
  auto cache = model.make_cache(idx.size(0), idx.size(1), at::TensorOptions().dtype(at::kFloat), mode);
  std::vector<at::Tensor> logits;
  int64_t at = 0;
  for (const int64_t n : chunks) {
    logits.push_back(model.forward(idx.narrow(1, at, n), &cache));
    at += n;
  }
  EXPECT_EQ(cache.length(), idx.size(1));
  return at::cat(logits, 1);
}

struct Case {
  AttentionKind kind;
  bool bias;
};

}  // namespace

class CacheMatchesFullForward : public testing::TestWithParam<Case> {};

TEST_P(CacheMatchesFullForward, PrefillThenChunksThenSingleTokens) {
  at::manual_seed(7);
  auto config = tiny_config(GetParam().kind);
  config.bias = GetParam().bias;
  Gpt model(config);
  mlagpt::testing::sharpen(model, 5.0);
  model.eval();
  const c10::NoGradGuard no_grad;
  const at::Tensor idx = at::randint(0, config.vocab_size, {2, 16}, at::kLong);
  const at::Tensor full = model.forward(idx);  // [B, 16, V]
  // 5-token prefill, a 4-token chunk after it (the offset causal mask), then one token at a time.
  const std::vector<int64_t> chunks{5, 4, 1, 1, 1, 1, 1, 1, 1};
  const double naive = relative_error(decode_in_chunks(model, idx, chunks, MlaDecodeMode::kNaive), full);
  EXPECT_LE(naive, kTolerance);
  double absorbed = 0;
  if (config.attention == AttentionKind::kMla) {
    absorbed = relative_error(decode_in_chunks(model, idx, chunks, MlaDecodeMode::kAbsorbed), full);
    EXPECT_LE(absorbed, kTolerance);
    const double between = relative_error(decode_in_chunks(model, idx, chunks, MlaDecodeMode::kAbsorbed),
                                          decode_in_chunks(model, idx, chunks, MlaDecodeMode::kNaive));
    EXPECT_LE(between, kTolerance);
  }
  std::printf("[cache %s%s] relative error vs full forward: naive %.2e, absorbed %.2e\n",
              std::string(mlagpt::model::to_string(config.attention)).c_str(), config.bias ? "+bias" : "", naive,
              absorbed);
}

INSTANTIATE_TEST_SUITE_P(Variants, CacheMatchesFullForward,
                         testing::Values(Case{AttentionKind::kMha, false}, Case{AttentionKind::kGqa, false},
                                         Case{AttentionKind::kMqa, false}, Case{AttentionKind::kMla, false},
                                         Case{AttentionKind::kMla, true}));

TEST(KvCache, HoldsWhatEachVariantCaches) {
  const int64_t batch = 3;
  const int64_t max_len = 10;
  for (const auto kind : {AttentionKind::kMha, AttentionKind::kGqa, AttentionKind::kMqa, AttentionKind::kMla}) {
    const auto c = tiny_config(kind);
    Gpt model(c);
    const auto cache = model.make_cache(batch, max_len, at::TensorOptions().dtype(at::kFloat));
    // Values per token per layer: MHA 2 H Dh, GQA 2 Hkv Dh, MQA 2 Dh, MLA Dc + Dr.
    const int64_t per_token =
        kind == AttentionKind::kMla ? c.kv_lora_rank + c.qk_rope_head_dim : 2 * c.n_kv_head * c.head_dim();
    EXPECT_EQ(cache.bytes(), per_token * c.n_layer * batch * max_len * 4) << mlagpt::model::to_string(kind);
  }
}

TEST(KvCache, RefusesMoreThanItHolds) {
  Gpt model(tiny_config(AttentionKind::kMla));
  auto cache = model.make_cache(1, 4, at::TensorOptions().dtype(at::kFloat));
  model.forward(at::randint(0, 61, {1, 3}, at::kLong), &cache);
  EXPECT_THROW(model.forward(at::randint(0, 61, {1, 2}, at::kLong), &cache), mlagpt::Error);
  EXPECT_THROW(model.make_cache(1, 25, at::TensorOptions()), mlagpt::Error);  // block_size is 24
}

// MLA in absorbed mode prefills naively (absorbed attention costs more over a whole prompt; latent_attention.cpp
// compares the two costs) and decodes absorbed: its prefill logits are bitwise those of a naive cache, and a
// single-token step then differs from the naive step by round-off only (the absorbed arithmetic differs).
TEST(KvCache, AbsorbedModePrefillsNaivelyAndDecodesAbsorbed) {
  at::manual_seed(12);
  const auto config = tiny_config(AttentionKind::kMla);  // 2 Dc > Dn + Dv: absorbed attention is the wider
  Gpt model(config);
  mlagpt::testing::sharpen(model, 5.0);
  const c10::NoGradGuard no_grad;
  const at::Tensor prompt = at::randint(0, config.vocab_size, {2, 11}, at::kLong);
  const at::Tensor next = at::randint(0, config.vocab_size, {2, 1}, at::kLong);
  const auto options = at::TensorOptions().dtype(at::kFloat);
  auto naive = model.make_cache(2, 12, options, MlaDecodeMode::kNaive);
  auto absorbed = model.make_cache(2, 12, options, MlaDecodeMode::kAbsorbed);
  EXPECT_TRUE(at::equal(model.forward(prompt, &absorbed), model.forward(prompt, &naive)));
  const at::Tensor step_naive = model.forward(next, &naive);
  const at::Tensor step_absorbed = model.forward(next, &absorbed);
  EXPECT_FALSE(at::equal(step_absorbed, step_naive));
  EXPECT_LT(relative_error(step_absorbed, step_naive), 1e-5);
}
