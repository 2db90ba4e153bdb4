// Metrics of training, through one sink interface with two implementations: JsonlSink appends one JSON object per
// record to RUN/metrics.jsonl (the file `mlagpt report` and plotting scripts read; flushed per line, so a killed
// run loses nothing already logged), and PrometheusSink updates the counters, gauges and histogram that the
// exporter serves at /metrics. Metric names follow docs/design.md ("Metrics"): prefix mlagpt_, base units, _total
// on counters, _seconds, _bytes, _ratio; never a step label (the step is itself a gauge); constant labels job and
// rank (and dp_rank, tp_rank) on every series. Sinks are called from the training thread only.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mlagpt::monitoring {

struct StepMetrics {
  int64_t step = 0;
  double loss = 0;
  double learning_rate = 0;
  double grad_norm = 0;
  double step_seconds = 0;
  int64_t tokens = 0;  // tokens processed by this step, all ranks
  double tokens_per_second = 0;
  std::optional<double> mfu;  // model FLOPs utilization, where the device's peak is known
  int64_t skipped_steps_total = 0;
  int64_t rank_tokens = 0;  // tokens of this step on this rank's data-parallel replica (tokens / dp size)
};

struct EvalMetrics {
  int64_t step = 0;
  double loss = 0;
  double perplexity = 0;
};

// A checkpoint written or loaded by this rank.
struct CheckpointMetrics {
  int64_t step = 0;
  bool save = true;  // false: a load
  double seconds = 0;
  int64_t bytes = 0;            // written or read by this rank
  int64_t bytes_all_ranks = 0;  // written by all ranks (saves)
};

// One projection compressed by a compression pass (trainer/compression/compression.h); counts are of the whole
// projection, all tensor-parallel shards.
struct CompressedLayer {
  std::string layer;        // its path, "blocks.0.mlp.fc"
  int64_t rank_before = 0;  // 0: it was dense
  int64_t rank = 0;
  double kept_energy = 0;
  double relative_error = 0;
  int64_t parameters_before = 0;
  int64_t parameters_after = 0;
  double seconds = 0;
};

// A compression pass after optimizer step `step`.
struct CompressionMetrics {
  int64_t step = 0;
  std::string mode;  // factorize or project
  std::vector<CompressedLayer> layers;
  int64_t model_parameters_before = 0;
  int64_t model_parameters_after = 0;
  int64_t kv_cache_bytes_per_token = 0;
  double seconds = 0;
};

// Running totals of one collective kind on one process group (launch/metered_communicator.h).
struct CollectiveSample {
  std::string group;  // "dp", "tp"
  std::string op;     // "all_reduce", "broadcast", "all_gather", "reduce_scatter", "barrier"
  int64_t count = 0;
  int64_t bytes = 0;
  double seconds = 0;  // host time blocked in them
};

// How this rank spends its time and memory, sampled whenever the trainer reads its steps back: running totals
// (the sink publishes their increments) and the device's memory now.
struct RuntimeMetrics {
  double data_wait_seconds_total = 0;  // the training thread waiting for the loader's next batch
  std::vector<CollectiveSample> collectives;
  int64_t memory_allocated_bytes = 0;  // monitoring/device_memory.h says what each is on CPU and CUDA
  int64_t memory_reserved_bytes = 0;
  int64_t memory_peak_bytes = 0;
  int64_t model_parameters = 0;  // the model's now (all shards; compression changes it)
};

// The start of a training run (or of its resumed part): where and how it runs.
struct RunStartMetrics {
  int64_t step = 0;    // the step it starts from (0, or the checkpoint's)
  std::string device;  // "cpu", "cuda:0"
  std::string dtype;   // what run.dtype resolved to: float32 or bfloat16 (autocast)
  int world_size = 1;
  int dp = 1;
  int tp = 1;
};

class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
  virtual void record(const StepMetrics& metrics) = 0;
  virtual void record(const EvalMetrics& metrics) = 0;
  virtual void record(const CheckpointMetrics& metrics) = 0;
  virtual void record(const CompressionMetrics& metrics) = 0;
  // Not every sink keeps these (metrics.jsonl does not: they are per rank, and it is rank 0's).
  virtual void record(const RuntimeMetrics& /*metrics*/) {}
  // metrics.jsonl keeps it, for readers that need the device or dtype (`mlagpt report`'s KV-cache bytes).
  virtual void record(const RunStartMetrics& /*metrics*/) {}
};

class JsonlSink final : public MetricsSink {
 public:
  // Appends to `path` (a resumed run continues the same file); creates parent directories.
  explicit JsonlSink(const std::filesystem::path& path);
  using MetricsSink::record;
  void record(const RunStartMetrics& metrics) override;
  void record(const StepMetrics& metrics) override;
  void record(const EvalMetrics& metrics) override;
  void record(const CheckpointMetrics& metrics) override;
  void record(const CompressionMetrics& metrics) override;

 private:
  std::filesystem::path path_;
  std::ofstream out_;
};

// Who a process is, as constant labels on every series it serves, and what it was built from.
struct MetricsIdentity {
  std::string job;  // monitoring.job
  int rank = 0;
  int dp_rank = 0;
  int tp_rank = 0;
  std::string device;  // "cpu", "cuda:0": the mlagpt_device_memory_* series' device label
  // mlagpt_build_info's labels (version, build type, compiler, LibTorch, ...), besides job and rank.
  std::map<std::string, std::string> build;
};

// The upper bounds of mlagpt_step_seconds' 29 buckets: 1 ms to about 86 s, each 1.5 times the last, so that one
// histogram serves a CPU's tiny steps and a GPU's large ones, and a quantile interpolated inside a bucket lies within
// a factor 1.5 of the true one.
prometheus::Histogram::BucketBoundaries step_seconds_buckets();

class PrometheusSink final : public MetricsSink {
 public:
  PrometheusSink(prometheus::Registry& registry, const MetricsIdentity& identity);
  void record(const StepMetrics& metrics) override;
  void record(const EvalMetrics& metrics) override;
  void record(const CheckpointMetrics& metrics) override;
  void record(const CompressionMetrics& metrics) override;
  void record(const RuntimeMetrics& metrics) override;

 private:
  prometheus::Registry& registry_;
  std::map<std::string, std::string> labels_;  // job, rank, dp_rank, tp_rank
  prometheus::Gauge* step_;
  prometheus::Gauge* loss_;
  prometheus::Gauge* learning_rate_;
  prometheus::Gauge* grad_norm_;
  prometheus::Histogram* step_seconds_;
  prometheus::Gauge* tokens_per_second_;
  prometheus::Gauge* mfu_ = nullptr;  // registered at the first step that has an MFU
  prometheus::Counter* tokens_;
  prometheus::Counter* steps_;
  prometheus::Counter* nonfinite_steps_;
  int64_t nonfinite_seen_ = 0;
  // The gauges of events (an evaluation, a save, a load, a compression pass) appear with the first one: before it,
  // a 0 would read as a measurement.
  prometheus::Gauge& event_gauge(prometheus::Gauge*& gauge, const std::string& name, const std::string& help);
  prometheus::Gauge* eval_loss_ = nullptr;
  prometheus::Gauge* eval_perplexity_ = nullptr;
  prometheus::Gauge* checkpoint_save_seconds_ = nullptr;
  prometheus::Gauge* checkpoint_load_seconds_ = nullptr;
  prometheus::Counter* checkpoint_saves_;
  prometheus::Counter* checkpoint_loads_;
  prometheus::Counter* checkpoint_written_bytes_;
  prometheus::Counter* checkpoint_read_bytes_;
  prometheus::Gauge* compression_seconds_ = nullptr;
  prometheus::Gauge* model_parameters_;
  prometheus::Counter* compression_passes_;
  prometheus::Family<prometheus::Gauge>* layer_rank_;
  prometheus::Family<prometheus::Gauge>* layer_error_;
  prometheus::Family<prometheus::Gauge>* layer_energy_;
  prometheus::Counter* data_wait_seconds_;
  double data_wait_seen_ = 0;
  prometheus::Family<prometheus::Counter>* collective_seconds_;
  prometheus::Family<prometheus::Counter>* collective_bytes_;
  prometheus::Family<prometheus::Counter>* collectives_;
  std::map<std::pair<std::string, std::string>, CollectiveSample> collectives_seen_;
  prometheus::Gauge* memory_allocated_;
  prometheus::Gauge* memory_reserved_;
  prometheus::Gauge* memory_peak_;
};

// Forwards every record to each of several sinks.
class MetricsFanout final : public MetricsSink {
 public:
  void add(std::unique_ptr<MetricsSink> sink) { sinks_.push_back(std::move(sink)); }
  void record(const StepMetrics& metrics) override;
  void record(const EvalMetrics& metrics) override;
  void record(const CheckpointMetrics& metrics) override;
  void record(const CompressionMetrics& metrics) override;
  void record(const RuntimeMetrics& metrics) override;
  void record(const RunStartMetrics& metrics) override;

 private:
  std::vector<std::unique_ptr<MetricsSink>> sinks_;
};

}  // namespace mlagpt::monitoring
