// Validation loss and perplexity over a fixed set of validation batches (the first `eval.batches` steps of the
// deterministic validation pass, or all of it), and an optional text sample from a fixed prompt. Every rank takes
// the same number of steps; token losses and counts are summed over data-parallel ranks, so the result is the exact
// mean over the windows evaluated, whatever the number of ranks. Under tensor parallelism every rank of the mesh
// evaluates: the ranks of a tensor-parallel group read the same batches and compute model.loss together (it is
// collective over the group), so every rank gets the result. Runs in eval mode under no-grad and restores train
// mode.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "data/loader.h"
#include "data/tokenizer.h"
#include "launch/communicator.h"
#include "model/gpt.h"
#include "trainer/train_config.h"

namespace mlagpt::trainer {

struct EvalResult {
  double loss = 0;
  double perplexity = 0;
  int64_t tokens = 0;  // validation tokens scored, all ranks
};

class Evaluator {
 public:
  // `max_steps` = 0: the whole validation pass.
  Evaluator(data::LoaderConfig validation, int64_t max_steps, launch::Communicator& data_parallel);
  EvalResult evaluate(model::Gpt& model);

 private:
  data::ValidationPass pass_;
  int64_t max_steps_;
  launch::Communicator& data_parallel_;
};

// A sample of up to `tokens` tokens after `prompt` (temperature 0.8, top-k 200, seed 0, stopping at the end of a
// document), decoded to text.
std::string sample_text(model::Gpt& model, const data::Tokenizer& tokenizer, const std::string& prompt, int64_t tokens);

}  // namespace mlagpt::trainer
