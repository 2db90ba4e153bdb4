#include "monitoring/metrics_sink.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <map>

#include "launch/error.h"

namespace mlagpt::monitoring {

namespace {

// Seconds since the Unix epoch, as every record's "time".
double unix_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

JsonlSink::JsonlSink(const std::filesystem::path& path) : path_(path) {
  if (path.has_parent_path()) {
    std::filesystem::create_directories(path.parent_path());
  }
  out_.open(path, std::ios::app);
  if (!out_) {
    throw IoError(fmt::format("metrics: cannot open {} for appending", path.string()));
  }
}

void JsonlSink::record(const StepMetrics& m) {
  nlohmann::json line = {{"kind", "train"},
                         {"time", unix_time()},
                         {"step", m.step},
                         {"loss", m.loss},
                         {"lr", m.learning_rate},
                         {"grad_norm", m.grad_norm},
                         {"step_seconds", m.step_seconds},
                         {"tokens", m.tokens},
                         {"tokens_per_second", m.tokens_per_second},
                         {"skipped_steps_total", m.skipped_steps_total}};
  if (m.mfu) {
    line["mfu"] = *m.mfu;
  }
  out_ << line.dump() << '\n' << std::flush;
}

void JsonlSink::record(const EvalMetrics& m) {
  out_ << nlohmann::json{{"kind", "eval"},
                         {"time", unix_time()},
                         {"step", m.step},
                         {"val_loss", m.loss},
                         {"val_perplexity", m.perplexity}}
              .dump()
       << '\n'
       << std::flush;
}

void JsonlSink::record(const CheckpointMetrics& m) {
  out_ << nlohmann::json{{"kind", m.save ? "checkpoint_save" : "checkpoint_load"},
                         {"time", unix_time()},
                         {"step", m.step},
                         {"seconds", m.seconds},
                         {"bytes", m.bytes},
                         {"bytes_all_ranks", m.bytes_all_ranks}}
              .dump()
       << '\n'
       << std::flush;
}

void JsonlSink::record(const CompressionMetrics& m) {
  nlohmann::json layers = nlohmann::json::array();
  for (const CompressedLayer& layer : m.layers) {
    layers.push_back({{"layer", layer.layer},
                      {"rank_before", layer.rank_before},
                      {"rank", layer.rank},
                      {"kept_energy", layer.kept_energy},
                      {"relative_error", layer.relative_error},
                      {"parameters_before", layer.parameters_before},
                      {"parameters_after", layer.parameters_after},
                      {"seconds", layer.seconds}});
  }
  out_ << nlohmann::json{{"kind", "compression"},
                         {"time", unix_time()},
                         {"step", m.step},
                         {"mode", m.mode},
                         {"seconds", m.seconds},
                         {"model_parameters_before", m.model_parameters_before},
                         {"model_parameters_after", m.model_parameters_after},
                         {"kv_cache_bytes_per_token", m.kv_cache_bytes_per_token},
                         {"layers", layers}}
              .dump()
       << '\n'
       << std::flush;
}

namespace {

prometheus::Gauge* gauge(prometheus::Registry& registry, const std::string& name, const std::string& help,
                         const std::string& rank) {
  return &prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add({{"rank", rank}});
}

prometheus::Counter* counter(prometheus::Registry& registry, const std::string& name, const std::string& help,
                             const std::string& rank) {
  return &prometheus::BuildCounter().Name(name).Help(help).Register(registry).Add({{"rank", rank}});
}

}  // namespace

PrometheusSink::PrometheusSink(prometheus::Registry& registry, int rank_number) : rank_(std::to_string(rank_number)) {
  const std::string& rank = rank_;
  step_ = gauge(registry, "mlagpt_train_step", "Optimizer steps completed", rank);
  loss_ = gauge(registry, "mlagpt_train_loss", "Training loss of the last step (nats per token)", rank);
  learning_rate_ = gauge(registry, "mlagpt_learning_rate", "Learning rate of the last step", rank);
  grad_norm_ = gauge(registry, "mlagpt_grad_norm", "Global gradient norm of the last step, before clipping", rank);
  step_seconds_ = gauge(registry, "mlagpt_step_seconds", "Wall time of the last step", rank);
  tokens_per_second_ = gauge(registry, "mlagpt_tokens_per_second", "Training throughput of the last step", rank);
  mfu_ = gauge(registry, "mlagpt_mfu_ratio", "Model FLOPs utilization of the last step (GPU)", rank);
  tokens_ = counter(registry, "mlagpt_tokens_total", "Training tokens processed", rank);
  steps_ = counter(registry, "mlagpt_steps_total", "Optimizer steps taken by this process", rank);
  skipped_ = gauge(registry, "mlagpt_skipped_steps", "Steps skipped for a non-finite loss or gradient", rank);
  eval_loss_ = gauge(registry, "mlagpt_eval_loss", "Validation loss of the last evaluation", rank);
  checkpoint_save_seconds_ =
      gauge(registry, "mlagpt_checkpoint_save_seconds", "Wall time of the last checkpoint save", rank);
  checkpoint_load_seconds_ =
      gauge(registry, "mlagpt_checkpoint_load_seconds", "Wall time of the last checkpoint load", rank);
  checkpoint_written_bytes_ =
      counter(registry, "mlagpt_checkpoint_written_bytes_total", "Checkpoint bytes this rank wrote", rank);
  checkpoint_read_bytes_ =
      counter(registry, "mlagpt_checkpoint_read_bytes_total", "Checkpoint bytes this rank read", rank);
  compression_seconds_ =
      gauge(registry, "mlagpt_compression_seconds", "Wall time of the last compression pass on this rank", rank);
  model_parameters_ = gauge(registry, "mlagpt_model_parameters",
                            "Parameters of the model after the last compression "
                            "pass (all tensor-parallel shards)",
                            rank);
  compression_passes_ = counter(registry, "mlagpt_compression_passes_total", "Compression passes run", rank);
  layer_rank_ = &prometheus::BuildGauge()
                     .Name("mlagpt_compressed_layer_rank")
                     .Help("Rank of a compressed projection after the last pass")
                     .Register(registry);
  layer_error_ = &prometheus::BuildGauge()
                      .Name("mlagpt_compressed_layer_relative_error_ratio")
                      .Help("Relative Frobenius error of a projection's last compression")
                      .Register(registry);
  layer_energy_ = &prometheus::BuildGauge()
                       .Name("mlagpt_compressed_layer_kept_energy_ratio")
                       .Help("Share of a projection's squared singular values its last compression kept")
                       .Register(registry);
}

void PrometheusSink::record(const CompressionMetrics& m) {
  compression_seconds_->Set(m.seconds);
  model_parameters_->Set(static_cast<double>(m.model_parameters_after));
  compression_passes_->Increment();
  // One series per compressed layer (a bounded label: the model's projections), never per step.
  for (const CompressedLayer& layer : m.layers) {
    const std::map<std::string, std::string> labels{{"rank", rank_}, {"layer", layer.layer}};
    layer_rank_->Add(labels).Set(static_cast<double>(layer.rank));
    layer_error_->Add(labels).Set(layer.relative_error);
    layer_energy_->Add(labels).Set(layer.kept_energy);
  }
}

void PrometheusSink::record(const CheckpointMetrics& m) {
  (m.save ? checkpoint_save_seconds_ : checkpoint_load_seconds_)->Set(m.seconds);
  (m.save ? checkpoint_written_bytes_ : checkpoint_read_bytes_)->Increment(static_cast<double>(m.bytes));
}

void PrometheusSink::record(const StepMetrics& m) {
  step_->Set(static_cast<double>(m.step));
  loss_->Set(m.loss);
  learning_rate_->Set(m.learning_rate);
  grad_norm_->Set(m.grad_norm);
  step_seconds_->Set(m.step_seconds);
  tokens_per_second_->Set(m.tokens_per_second);
  if (m.mfu) {
    mfu_->Set(*m.mfu);
  }
  tokens_->Increment(static_cast<double>(m.tokens));
  steps_->Increment();
  skipped_->Set(static_cast<double>(m.skipped_steps_total));
}

void PrometheusSink::record(const EvalMetrics& m) {
  eval_loss_->Set(m.loss);
}

void MetricsFanout::record(const StepMetrics& metrics) {
  for (auto& sink : sinks_) {
    sink->record(metrics);
  }
}

void MetricsFanout::record(const EvalMetrics& metrics) {
  for (auto& sink : sinks_) {
    sink->record(metrics);
  }
}

void MetricsFanout::record(const CompressionMetrics& metrics) {
  for (auto& sink : sinks_) {
    sink->record(metrics);
  }
}

void MetricsFanout::record(const CheckpointMetrics& metrics) {
  for (auto& sink : sinks_) {
    sink->record(metrics);
  }
}

}  // namespace mlagpt::monitoring
