#include "model/generation.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/multinomial.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/topk.h>
#include <c10/core/GradMode.h>

#include <fmt/format.h>

#include <limits>

#include "launch/error.h"

namespace mlagpt::model {

void SamplingConfig::validate() const {
  if (max_new_tokens < 0) {
    throw ConfigError(fmt::format("max_new_tokens must be >= 0, got {}", max_new_tokens));
  }
  if (temperature < 0) {
    throw ConfigError(fmt::format("temperature must be >= 0 (0 = greedy), got {}", temperature));
  }
  if (vocab_size < 0) {
    throw ConfigError(fmt::format("vocab_size must be >= 0 (0 = the model's), got {}", vocab_size));
  }
  if (top_k < 0) {
    throw ConfigError(fmt::format("top_k must be >= 0 (0 = off), got {}", top_k));
  }
  if (!(top_p > 0 && top_p <= 1)) {
    throw ConfigError(fmt::format("top_p must be in (0, 1], got {}", top_p));
  }
}

int64_t sample_token(const at::Tensor& all_logits, const SamplingConfig& sampling, at::Generator& generator) {
  const at::Tensor logits = sampling.vocab_size > 0 && sampling.vocab_size < all_logits.size(0)
                                ? all_logits.narrow(0, 0, sampling.vocab_size)  // [V'], no padding ids
                                : all_logits;
  if (sampling.temperature == 0) {
    return at::argmax(logits).item<int64_t>();
  }
  at::Tensor scaled = logits / sampling.temperature;  // [V]
  const double minus_infinity = -std::numeric_limits<double>::infinity();
  if (sampling.top_k > 0 && sampling.top_k < scaled.size(0)) {
    const at::Tensor kth = std::get<0>(at::topk(scaled, sampling.top_k)).min();
    scaled = scaled.masked_fill(scaled < kth, minus_infinity);
  }
  if (sampling.top_p < 1) {
    // Keep the smallest set of most likely tokens whose probability reaches top_p (the first always stays).
    const auto [sorted, order] = at::sort(scaled, /*dim=*/0, /*descending=*/true);
    const at::Tensor cumulative = at::cumsum(at::softmax(sorted, 0), 0);
    const at::Tensor drop_sorted = (cumulative - at::softmax(sorted, 0)) >= sampling.top_p;
    scaled = scaled.index_put({order.masked_select(drop_sorted)}, at::tensor(minus_infinity, scaled.options()));
  }
  return at::multinomial(at::softmax(scaled, 0), 1, /*replacement=*/false, generator).item<int64_t>();
}

std::vector<int64_t> generate(Gpt& model, const std::vector<int64_t>& prompt, const SamplingConfig& sampling,
                              const std::function<void(int64_t)>& on_token) {
  sampling.validate();
  if (model.tensor_parallel().size() > 1) {
    throw ConfigError(fmt::format(
        "generate: the model is split over {} tensor-parallel ranks, and sampling runs in one process; load the "
        "checkpoint (it reshards) into a model of one process",
        model.tensor_parallel().size()));
  }
  const int64_t block_size = model.config().block_size;
  if (prompt.empty()) {
    throw ConfigError("generate: the prompt is empty (give at least one token, e.g. the end-of-text token)");
  }
  if (static_cast<int64_t>(prompt.size()) >= block_size) {
    throw ConfigError(
        fmt::format("the prompt has {} tokens; it must be shorter than the model's block_size ({}) to "
                    "leave room for a generated token",
                    prompt.size(), block_size));
  }
  const bool was_training = model.is_training();
  model.eval();
  const c10::NoGradGuard no_grad;
  const at::Tensor any_parameter = model.parameters().front();
  const auto ids = at::TensorOptions().dtype(at::kLong).device(any_parameter.device());
  const int64_t max_len = std::min<int64_t>(block_size, static_cast<int64_t>(prompt.size()) + sampling.max_new_tokens);
  KvCache cache = model.make_cache(1, max_len, any_parameter.options(), sampling.mla_mode);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(sampling.seed);

  std::vector<int64_t> generated;
  at::Tensor logits = model.forward(at::tensor(prompt, ids).view({1, -1}), &cache);  // [1, T, V]
  while (static_cast<int64_t>(generated.size()) < sampling.max_new_tokens) {
    const at::Tensor last = logits.select(1, logits.size(1) - 1).squeeze(0).to(at::kFloat).cpu();  // [V]
    const int64_t token = sample_token(last, sampling, generator);
    generated.push_back(token);
    if (on_token) {
      on_token(token);
    }
    // A full context still predicts one more token, which is returned but never fed back.
    if ((sampling.stop_token && token == *sampling.stop_token) || cache.length() >= max_len) {
      break;
    }
    logits = model.forward(at::tensor({token}, ids).view({1, 1}), &cache);
  }
  if (was_training) {
    model.train();
  }
  return generated;
}

}  // namespace mlagpt::model
