// Metrics of training, through one sink interface with two implementations: JsonlSink appends one JSON object per
// record to RUN/metrics.jsonl (the file a plotting script reads; flushed per line, so a killed run loses nothing
// already logged), and PrometheusSink updates gauges and counters that the exporter serves at /metrics.
// Metric names follow docs/design.md ("Metrics"): prefix mlagpt_, base units, _total on counters, _seconds,
// _ratio; never a step label (the step is itself a gauge). Sinks are called from the training thread only.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
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
  std::optional<double> mfu;  // model FLOPs utilization, on GPU
  int64_t skipped_steps_total = 0;
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

class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
  virtual void record(const StepMetrics& metrics) = 0;
  virtual void record(const EvalMetrics& metrics) = 0;
  virtual void record(const CheckpointMetrics& metrics) = 0;
  virtual void record(const CompressionMetrics& metrics) = 0;
};

class JsonlSink final : public MetricsSink {
 public:
  // Appends to `path` (a resumed run continues the same file); creates parent directories.
  explicit JsonlSink(const std::filesystem::path& path);
  void record(const StepMetrics& metrics) override;
  void record(const EvalMetrics& metrics) override;
  void record(const CheckpointMetrics& metrics) override;
  void record(const CompressionMetrics& metrics) override;

 private:
  std::filesystem::path path_;
  std::ofstream out_;
};

class PrometheusSink final : public MetricsSink {
 public:
  PrometheusSink(prometheus::Registry& registry, int rank);
  void record(const StepMetrics& metrics) override;
  void record(const EvalMetrics& metrics) override;
  void record(const CheckpointMetrics& metrics) override;
  void record(const CompressionMetrics& metrics) override;

 private:
  std::string rank_;
  prometheus::Gauge* step_;
  prometheus::Gauge* loss_;
  prometheus::Gauge* learning_rate_;
  prometheus::Gauge* grad_norm_;
  prometheus::Gauge* step_seconds_;
  prometheus::Gauge* tokens_per_second_;
  prometheus::Gauge* mfu_;
  prometheus::Counter* tokens_;
  prometheus::Counter* steps_;
  prometheus::Gauge* skipped_;
  prometheus::Gauge* eval_loss_;
  prometheus::Gauge* checkpoint_save_seconds_;
  prometheus::Gauge* checkpoint_load_seconds_;
  prometheus::Counter* checkpoint_written_bytes_;
  prometheus::Counter* checkpoint_read_bytes_;
  prometheus::Gauge* compression_seconds_;
  prometheus::Gauge* model_parameters_;
  prometheus::Counter* compression_passes_;
  prometheus::Family<prometheus::Gauge>* layer_rank_;
  prometheus::Family<prometheus::Gauge>* layer_error_;
  prometheus::Family<prometheus::Gauge>* layer_energy_;
};

// Forwards every record to each of several sinks.
class MetricsFanout final : public MetricsSink {
 public:
  void add(std::unique_ptr<MetricsSink> sink) { sinks_.push_back(std::move(sink)); }
  void record(const StepMetrics& metrics) override;
  void record(const EvalMetrics& metrics) override;
  void record(const CheckpointMetrics& metrics) override;
  void record(const CompressionMetrics& metrics) override;

 private:
  std::vector<std::unique_ptr<MetricsSink>> sinks_;
};

}  // namespace mlagpt::monitoring
