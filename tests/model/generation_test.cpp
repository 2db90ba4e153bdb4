// generate(): greedy decoding equals the argmax of full forwards without a cache, seeds make sampling
// reproducible, top-k = 1 and a tiny top-p reduce to greedy, the stop token stops, absorbed and naive MLA
// decoding pick the same tokens, padding ids past the tokenizer's vocabulary are never sampled, and bad sampling
// settings are refused.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include "launch/error.h"
#include "model/generation.h"
#include "support/model_fixtures.h"

using mlagpt::model::AttentionKind;
using mlagpt::model::Gpt;
using mlagpt::model::SamplingConfig;

namespace {

Gpt sharp_model(AttentionKind kind) {
  at::manual_seed(8);
  Gpt model(mlagpt::testing::tiny_config(kind));
  mlagpt::testing::sharpen(model, 5.0);
  return model;
}

std::vector<int64_t> greedy_without_cache(Gpt& model, std::vector<int64_t> tokens, int64_t n) {
  const c10::NoGradGuard no_grad;
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i) {
    const at::Tensor logits = model.forward(at::tensor(tokens, at::kLong).view({1, -1}));
    const int64_t next = at::argmax(logits.select(1, logits.size(1) - 1)).item<int64_t>();
    out.push_back(next);
    tokens.push_back(next);
  }
  return out;
}

}  // namespace

TEST(Generate, GreedyEqualsArgmaxOfFullForwards) {
  for (const auto kind : {AttentionKind::kMha, AttentionKind::kGqa, AttentionKind::kMla}) {
    Gpt model = sharp_model(kind);
    model.eval();
    SamplingConfig sampling;
    sampling.temperature = 0;
    sampling.max_new_tokens = 10;
    const std::vector<int64_t> prompt{3, 14, 15, 9};
    EXPECT_EQ(mlagpt::model::generate(model, prompt, sampling), greedy_without_cache(model, prompt, 10))
        << mlagpt::model::to_string(kind);
  }
}

TEST(Generate, SeedsReproduceAndFiltersReduceToGreedy) {
  Gpt model = sharp_model(AttentionKind::kMla);
  SamplingConfig sampling;
  sampling.max_new_tokens = 12;
  sampling.seed = 42;
  const std::vector<int64_t> prompt{1, 2, 3};
  const auto first = mlagpt::model::generate(model, prompt, sampling);
  EXPECT_EQ(first.size(), 12U);
  EXPECT_EQ(mlagpt::model::generate(model, prompt, sampling), first);
  SamplingConfig greedy = sampling;
  greedy.temperature = 0;
  const auto expected = mlagpt::model::generate(model, prompt, greedy);
  SamplingConfig top_k = sampling;
  top_k.top_k = 1;
  EXPECT_EQ(mlagpt::model::generate(model, prompt, top_k), expected);
  SamplingConfig top_p = sampling;
  top_p.top_p = 1e-9;
  EXPECT_EQ(mlagpt::model::generate(model, prompt, top_p), expected);
  SamplingConfig naive = greedy;
  naive.mla_mode = mlagpt::model::MlaDecodeMode::kNaive;
  EXPECT_EQ(mlagpt::model::generate(model, prompt, naive), expected);
}

TEST(Generate, StopsAtTheStopTokenAndAtBlockSize) {
  Gpt model = sharp_model(AttentionKind::kMqa);
  SamplingConfig sampling;
  sampling.temperature = 0;
  sampling.max_new_tokens = 5;
  const std::vector<int64_t> prompt{7, 8};
  const auto tokens = mlagpt::model::generate(model, prompt, sampling);
  sampling.stop_token = tokens.front();
  std::vector<int64_t> streamed;
  EXPECT_EQ(mlagpt::model::generate(model, prompt, sampling, [&](int64_t t) { streamed.push_back(t); }),
            std::vector<int64_t>{tokens.front()});
  EXPECT_EQ(streamed, std::vector<int64_t>{tokens.front()});
  sampling.stop_token.reset();
  sampling.max_new_tokens = 100;
  // The context fills at block_size (24) positions: 22 tokens fed back after the 2-token prompt, plus the one
  // predicted from the full context.
  EXPECT_EQ(mlagpt::model::generate(model, prompt, sampling).size(), 23U);
}

// A model's vocabulary padded past the tokenizer's (320 for 257 byte tokens) has ids no tokenizer can decode: with
// vocab_size set, sampling never returns one, even when they hold the largest logits.
TEST(SampleToken, NeverReturnsAnIdAtOrAboveVocabSize) {
  at::Tensor logits = at::zeros({40});
  logits.narrow(0, 29, 11).fill_(10.0);  // ids 29..39: padding that the model favours
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(5);
  SamplingConfig sampling;
  sampling.vocab_size = 29;
  for (int i = 0; i < 200; ++i) {
    EXPECT_LT(mlagpt::model::sample_token(logits, sampling, generator), 29);
  }
  sampling.temperature = 0;
  EXPECT_LT(mlagpt::model::sample_token(logits, sampling, generator), 29);
  sampling.vocab_size = 0;  // off: the padding ids win
  EXPECT_GE(mlagpt::model::sample_token(logits, sampling, generator), 29);
  sampling.vocab_size = -1;
  EXPECT_THROW(sampling.validate(), mlagpt::ConfigError);
}

TEST(Generate, RefusesBadSettings) {
  Gpt model = sharp_model(AttentionKind::kMha);
  SamplingConfig sampling;
  EXPECT_THROW(mlagpt::model::generate(model, {}, sampling), mlagpt::ConfigError);
  EXPECT_THROW(mlagpt::model::generate(model, std::vector<int64_t>(24, 1), sampling), mlagpt::ConfigError);
  sampling.temperature = -1;
  EXPECT_THROW(mlagpt::model::generate(model, {1}, sampling), mlagpt::ConfigError);
  sampling.temperature = 1;
  sampling.top_p = 0;
  EXPECT_THROW(mlagpt::model::generate(model, {1}, sampling), mlagpt::ConfigError);
}
