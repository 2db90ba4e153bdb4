// Trainer: `mlagpt train` end to end. It composes the parts, each built from its own config section: the loader
// (data), the model, AdamW and its schedule (TrainStep), the Evaluator, the Checkpointer and the metrics sinks;
// train() is only the loop that calls them. Written against the Communicator and a data-parallel group, so the
// distributed backends plug in without changing the loop; with one process the group is the local one.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "data/dataset_manifest.h"
#include "data/loader.h"
#include "data/tokenizer.h"
#include "launch/communicator.h"
#include "launch/metered_communicator.h"
#include "launch/process_mesh.h"
#include "launch/runtime.h"
#include "launch/stop_signals.h"
#include "launch/watchdog.h"
#include "model/gpt.h"
#include "monitoring/metrics_sink.h"
#include "monitoring/prometheus_exporter.h"
#include "trainer/checkpointer.h"
#include "trainer/compression/compression.h"
#include "trainer/evaluator.h"
#include "trainer/parallel/tensor_parallel_group.h"
#include "trainer/train_config.h"
#include "trainer/train_step.h"

namespace mlagpt::trainer {

// The device `run.device` names ("auto": the local rank's GPU when there is one, else the CPU).
c10::Device select_device(const RunConfig& run, const launch::ProcessInfo& process);

// The dataset's manifest, its tokenizer and its shard paths, opened once for train, eval and sample.
struct Dataset {
  std::filesystem::path dir;
  data::DatasetManifest manifest;
  std::unique_ptr<data::Tokenizer> tokenizer;
  std::vector<std::filesystem::path> train_shards() const;
  std::vector<std::filesystem::path> val_shards() const;
  DatasetIdentity identity() const;
};
// Opens `dir` for `model`: a model.vocab_size of 0 (not set) becomes the dataset's vocabulary rounded up to a
// multiple of kVocabMultiple; a set one smaller than the dataset's is a ConfigError naming both.
Dataset open_dataset(const std::filesystem::path& dir, model::ModelConfig& model);

// Embedding and output-layer widths that are a multiple of 64 keep the matmuls on their fast paths (as nanoGPT pads
// GPT-2's 50257 to 50304); the extra rows are tokens that never occur, whose logits training pushes down.
constexpr int64_t kVocabMultiple = 64;
int64_t padded_vocab_size(int64_t dataset_vocab_size);

class Trainer {
 public:
  Trainer(TrainConfig config, const launch::Runtime& runtime);
  ~Trainer();
  // Trains to run.max_steps. `resume`: "" (a fresh run; refused when the checkpoint directory already holds one),
  // "auto" (the newest complete checkpoint that verifies, skipping damaged ones with a warning; fresh only when there
  // is no complete checkpoint at all) or a checkpoint directory (which must verify).
  // SIGTERM, SIGINT or SIGUSR1 on any rank stops every rank after the step in progress, with a checkpoint of that
  // step: train() then returns the signal's number (0 when it reached max_steps).
  int train(const std::string& resume);

  int64_t step() const { return state_.step; }
  model::Gpt& model() { return *model_; }
  const EvalResult& last_eval() const { return last_eval_; }
  const TrainConfig& config() const { return config_; }
  FlatAdamW& optimizer() { return *optimizer_; }  // tests read its state

  // One compression pass over the model now, as train() runs one after each step compress.due() names: the pass
  // (trainer/compression/compression.h), then in factorize mode the optimizer, the gradient reduction and the
  // checkpointer rebuilt over the new parameters, keeping every other parameter's AdamW state and the step count;
  // the factors' moments start at zero (docs/design.md, "Compression"). Logs and records the report. Collective.
  CompressionReport compress(const CompressConfig& compress);

  // For `mlagpt compress`: restores `checkpoint` (a path or "auto") as train() does, evaluates on the validation
  // split, saves a checkpoint of the current state. Collective.
  void load(const std::string& checkpoint);
  EvalResult evaluate_now();
  SaveReport save();

 private:
  void resume_from(const std::string& resume);
  // A fresh optimizer (and the gradient reduction, train step and checkpointer over it) for the model's current
  // parameters; with keep_state, the AdamW moments of every parameter that keeps its name and size, and the step
  // count, carried over from the old one (gathered over the data-parallel ranks under ZeRO-1).
  void rebuild_optimizer(bool keep_state);
  // Makes the model's low-rank structure that of `low_rank` (a stored ModelConfig::low_rank) before a checkpoint
  // of a compressed model loads.
  void adopt_low_rank(const std::string& low_rank);
  // Reads the steps run since the last read (one host synchronization), counts skipped steps, records their
  // metrics and logs the last; returns the stop signal the ranks agreed on (0: none).
  int read_pending_steps();
  // Serves this rank's metrics (monitoring.metrics_address); rank 0 writes every rank's scrape target to
  // monitoring.targets_file. Collective over the mesh.
  void start_metrics_exporter();
  void record_runtime_metrics();  // collectives, data wait, memory, parameters: for Prometheus only
  // run.dtype with "auto" resolved: bfloat16 (autocast) on CUDA, float32 on a CPU.
  std::string resolved_dtype() const;
  void log_step(int64_t step, const StepResult& result, double seconds);
  void evaluate();
  SaveReport save_checkpoint();
  void seed_step_randomness();

  TrainConfig config_;
  const launch::Runtime& runtime_;
  // With more than one process and parallel.timeout_s > 0; before mesh_, whose groups it watches, so it outlives them.
  std::unique_ptr<launch::CollectiveWatchdog> watchdog_;
  launch::CollectiveMeter collective_meter_;  // the mesh's groups count into it; outlives the mesh
  std::unique_ptr<launch::ProcessMesh> mesh_;
  launch::Communicator* data_parallel_ = nullptr;  // mesh_->dp()
  c10::Device device_;
  Dataset dataset_;
  std::unique_ptr<TensorParallelGroup> tensor_parallel_;  // over mesh_->tp(); outlives the model
  std::shared_ptr<model::Gpt> model_;
  std::unique_ptr<FlatAdamW> optimizer_;
  std::unique_ptr<GradReducer> reducer_;
  std::unique_ptr<data::TokenLoader> loader_;
  std::unique_ptr<TrainStep> train_step_;
  std::unique_ptr<Evaluator> evaluator_;
  std::unique_ptr<Checkpointer> checkpointer_;
  std::unique_ptr<monitoring::PrometheusExporter> exporter_;
  monitoring::MetricsFanout metrics_;
  TrainingState state_;
  std::vector<StepReport> pending_;  // steps run but not yet read
  std::chrono::steady_clock::time_point pending_since_;
  EvalResult last_eval_;
  int64_t bad_steps_in_a_row_ = 0;
  int64_t skipped_steps_ = 0;
  double data_wait_seconds_ = 0;  // in loader_->next() during training steps
  double flops_per_token_ = 0;
  double peak_flops_ = 0;
};

}  // namespace mlagpt::trainer
