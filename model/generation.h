// Text generation from a Gpt with its KV cache: the prompt is run once (prefill), then one token at a time is
// sampled and fed back. Sampling: temperature (0 = greedy argmax), then top-k, then top-p (nucleus) filtering, drawn
// from a generator seeded by `seed`, so the same seed gives the same tokens. Generation stops at max_new_tokens, at
// `stop_token`, or when the context reaches block_size. Runs under no-grad in eval mode and restores the mode.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "model/gpt.h"
#include "model/kv_cache.h"

namespace mlagpt::model {

struct SamplingConfig {
  int64_t max_new_tokens = 100;
  double temperature = 1.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = no top-k filtering
  double top_p = 1.0;        // 1 = no nucleus filtering
  uint64_t seed = 0;
  int64_t vocab_size = 0;  // sample only ids below it (the tokenizer's, when the model's vocabulary is padded); 0 = all
  std::optional<int64_t> stop_token;
  MlaDecodeMode mla_mode = MlaDecodeMode::kAbsorbed;
  // Sample only token ids below this (0 = every id the model has). A model's vocab_size is padded past the
  // tokenizer's (to a multiple of 64); the padding ids are never targets but have logits, and a barely trained
  // model would otherwise emit ids no tokenizer can decode.
  int64_t vocab_limit = 0;
  void validate() const;  // throws ConfigError naming the field
};

// Returns the generated tokens (not the prompt). `on_token` is called with each token as it is produced (the stop
// token included), so callers can stream text.
std::vector<int64_t> generate(Gpt& model, const std::vector<int64_t>& prompt, const SamplingConfig& sampling,
                              const std::function<void(int64_t)>& on_token = {});

// Filters and samples one token from logits [V] (float32, CPU); exposed for tests.
int64_t sample_token(const at::Tensor& logits, const SamplingConfig& sampling, at::Generator& generator);

}  // namespace mlagpt::model
