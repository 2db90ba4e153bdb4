#include "trainer/evaluator.h"

#include <ATen/ops/tensor.h>
#include <c10/core/GradMode.h>

#include <cmath>

#include "model/generation.h"

namespace mlagpt::trainer {

Evaluator::Evaluator(data::LoaderConfig validation, int64_t max_steps, launch::Communicator& data_parallel)
    : pass_(std::move(validation)), max_steps_(max_steps), data_parallel_(data_parallel) {}

EvalResult Evaluator::evaluate(model::Gpt& model) {
  const bool was_training = model.is_training();
  model.eval();
  const c10::NoGradGuard no_grad;
  pass_.reset();
  const int64_t steps = max_steps_ == 0 ? pass_.num_steps() : std::min(max_steps_, pass_.num_steps());
  double loss_sum = 0;
  double count = 0;
  for (int64_t i = 0; i < steps; ++i) {
    const data::ValidationBatch step = pass_.next();
    if (step.batch.x.size(0) == 0) {
      continue;  // this rank's share of the last step is empty; the collectives below still match
    }
    // Under tensor parallelism the ranks of the group compute it together, and every one gets it.
    loss_sum += model.loss(step.batch.x, step.batch.y).item<double>() * static_cast<double>(step.batch.y.numel());
    count += static_cast<double>(step.batch.y.numel());
  }
  at::Tensor totals = at::tensor({loss_sum, count}, at::kDouble);
  if (!model.parameters().empty() && model.parameters().front().is_cuda()) {
    totals = totals.to(model.parameters().front().device());
  }
  data_parallel_.all_reduce(totals, launch::ReduceOp::kSum);
  totals = totals.cpu();
  if (was_training) {
    model.train();
  }
  EvalResult result;
  result.tokens = static_cast<int64_t>(totals[1].item<double>());
  result.loss = result.tokens > 0 ? totals[0].item<double>() / totals[1].item<double>() : 0.0;
  result.perplexity = std::exp(result.loss);
  return result;
}

std::string sample_text(model::Gpt& model, const data::Tokenizer& tokenizer, const std::string& prompt,
                        int64_t tokens) {
  std::vector<int64_t> ids;
  for (const int32_t id : tokenizer.encode(prompt)) {
    ids.push_back(id);
  }
  if (ids.empty()) {
    ids.push_back(tokenizer.eot_id());
  }
  model::SamplingConfig sampling;
  sampling.max_new_tokens = tokens;
  sampling.temperature = 0.8;
  sampling.top_k = 200;
  sampling.stop_token = tokenizer.eot_id();
  sampling.vocab_size = tokenizer.vocab_size();  // never a padding id of the model's vocabulary
  std::vector<int64_t> generated = model::generate(model, ids, sampling);
  if (!generated.empty() && generated.back() == tokenizer.eot_id()) {
    generated.pop_back();  // the end of the document, not text
  }
  std::vector<int32_t> out(generated.begin(), generated.end());
  return prompt + tokenizer.decode(out);
}

}  // namespace mlagpt::trainer
