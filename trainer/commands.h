// The `train`, `eval` and `sample` commands as functions of their options, so the command line (cli.cpp) only
// parses. Each throws mlagpt errors; main() reports them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "launch/runtime.h"
#include "model/kv_cache.h"

namespace mlagpt::trainer {

struct TrainOptions {
  std::filesystem::path config;        // may be empty: defaults plus overrides
  std::vector<std::string> overrides;  // --section.key=value
  std::string resume;                  // "", "auto" or a checkpoint directory
};
// The process's exit status: 0 when training reached run.max_steps, 128 + the signal's number when a stop signal
// ended it early (after a checkpoint), as a shell reports a process that a signal ended.
int run_train(const TrainOptions& options, const launch::Runtime& runtime);

struct EvalOptions {
  std::filesystem::path checkpoint;  // a step directory, or a checkpoint directory (its newest complete step)
  std::string data_dir;              // "" = the dataset the checkpoint was trained on
  int64_t batches = 0;               // 0 = the whole validation split
  std::string device = "auto";
};
void run_eval(const EvalOptions& options, const launch::Runtime& runtime, std::ostream& out);

struct SampleOptions {
  std::filesystem::path checkpoint;
  std::string data_dir;  // where the tokenizer is; "" = the checkpoint's dataset
  std::string prompt;
  int64_t max_new_tokens = 200;
  double temperature = 0.8;
  int64_t top_k = 200;
  double top_p = 1.0;
  uint64_t seed = 0;
  model::MlaDecodeMode mode = model::MlaDecodeMode::kAbsorbed;
  std::string device = "auto";
};
// Streams the prompt and then each generated piece of text to `out` as it is produced.
void run_sample(const SampleOptions& options, const launch::Runtime& runtime, std::ostream& out);

struct CompressOptions {
  std::filesystem::path checkpoint;  // a step directory, or a checkpoint directory (its newest complete step)
  std::filesystem::path out;         // a new checkpoint directory (must not hold checkpoints yet)
  std::string targets = "blocks.*.mlp.*";
  int64_t rank = 0;  // exactly one of rank, energy, param_ratio
  double energy = 0;
  double param_ratio = 0;
  std::string mode = "factorize";
  int64_t batches = 0;   // validation batches for the losses before and after; 0 = the checkpoint's eval.batches
  std::string data_dir;  // "" = the checkpoint's dataset
  std::string device = "auto";
};
// `mlagpt compress`: one compression pass over a checkpoint's model (trainer/compression/compression.h), written as a
// new checkpoint in `out` that `train --resume`, `eval` and `sample` load; prints the validation loss before and
// after and the change in parameters and KV cache. The AdamW state of the other parameters and the training state
// are kept, so training goes on from it. One process, or data-parallel ranks under mpiexec (the layers are shared
// out among them).
void run_compress(const CompressOptions& options, const launch::Runtime& runtime, std::ostream& out);

struct ConvertOptions {
  std::filesystem::path checkpoint;  // of an MHA, GQA or MQA model
  std::filesystem::path out;         // a new checkpoint directory
  int64_t kv_lora_rank = 0;
  int64_t rope_dim = -1;  // -1: trainer/compression/convert.h's default
  int64_t batches = 0;    // validation batches for the losses; 0 = the checkpoint's eval.batches
  std::string data_dir;
  std::string device = "auto";
};
// `mlagpt convert --to-mla`: the checkpoint's model converted into MLA (trainer/compression/convert.h), written as
// step 0 of a new run in `out` (fresh optimizer state) that `train --resume` fine-tunes; prints the validation loss
// before and after, the parameters and KV cache of both, and the --model overrides that resume it. One process.
void run_convert(const ConvertOptions& options, const launch::Runtime& runtime, std::ostream& out);

}  // namespace mlagpt::trainer
