#include "monitoring/metrics_sink.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iterator>
#include <map>
#include <sstream>
#include <string>

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

void JsonlSink::record(const RunStartMetrics& m) {
  out_ << nlohmann::json{{"kind", "start"},  {"time", unix_time()},        {"step", m.step}, {"device", m.device},
                         {"dtype", m.dtype}, {"world_size", m.world_size}, {"dp", m.dp},     {"tp", m.tp}}
              .dump()
       << '\n'
       << std::flush;
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

// When this process started, in seconds since the Unix epoch: its start in clock ticks after boot (field 22 of
// /proc/self/stat) plus the boot time (btime in /proc/stat), as Prometheus's own process collector computes it.
// The time of the call where /proc does not say.
double process_start_time() {
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  const size_t name_end = stat.rfind(')');  // the command name, field 2, may hold spaces
  std::ifstream boot("/proc/stat");
  std::string key;
  double boot_time = 0;
  while (boot >> key) {
    if (key == "btime") {
      boot >> boot_time;
      break;
    }
    boot.ignore(1 << 20, '\n');
  }
  if (name_end == std::string::npos || boot_time == 0) {
    return unix_time();
  }
  std::istringstream fields(stat.substr(name_end + 2));  // from field 3 on
  std::string field;
  for (int i = 3; i < 22 && fields >> field; ++i) {
  }
  double ticks = 0;
  if (!(fields >> ticks)) {
    return unix_time();
  }
  return boot_time + ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

}  // namespace

prometheus::Histogram::BucketBoundaries step_seconds_buckets() {
  prometheus::Histogram::BucketBoundaries bounds;
  double bound = 1e-3;
  for (int i = 0; i < 29; ++i) {
    bounds.push_back(bound);
    bound *= 1.5;
  }
  return bounds;
}

PrometheusSink::PrometheusSink(prometheus::Registry& registry, const MetricsIdentity& identity)
    : registry_(registry),
      labels_{{"job", identity.job},
              {"rank", std::to_string(identity.rank)},
              {"dp_rank", std::to_string(identity.dp_rank)},
              {"tp_rank", std::to_string(identity.tp_rank)}} {
  const auto gauge = [&](const std::string& name, const std::string& help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Labels(labels_).Register(registry).Add({});
  };
  const auto counter = [&](const std::string& name, const std::string& help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Labels(labels_).Register(registry).Add({});
  };
  step_ = gauge("mlagpt_train_step", "Optimizer steps completed");
  loss_ = gauge("mlagpt_train_loss", "Training loss of the last step (nats per token)");
  learning_rate_ = gauge("mlagpt_learning_rate", "Learning rate of the last step");
  grad_norm_ = gauge("mlagpt_grad_norm", "Global gradient norm of the last step, before clipping");
  step_seconds_ = &prometheus::BuildHistogram()
                       .Name("mlagpt_step_seconds")
                       .Help("Wall time of a training step (the mean of the steps read back together)")
                       .Labels(labels_)
                       .Register(registry)
                       .Add({}, step_seconds_buckets());
  tokens_per_second_ = gauge("mlagpt_tokens_per_second", "Training throughput of the whole job over the last steps");
  tokens_ = counter("mlagpt_tokens_total", "Training tokens processed by this rank's data-parallel replica");
  steps_ = counter("mlagpt_steps_total", "Optimizer steps taken by this process");
  nonfinite_steps_ = counter("mlagpt_nonfinite_steps_total", "Steps skipped for a non-finite loss or gradient");
  checkpoint_saves_ = counter("mlagpt_checkpoint_saves_total", "Checkpoints this rank saved");
  checkpoint_loads_ = counter("mlagpt_checkpoint_loads_total", "Checkpoints this rank loaded");
  checkpoint_written_bytes_ = counter("mlagpt_checkpoint_written_bytes_total", "Checkpoint bytes this rank wrote");
  checkpoint_read_bytes_ = counter("mlagpt_checkpoint_read_bytes_total", "Checkpoint bytes this rank read");
  model_parameters_ =
      gauge("mlagpt_model_parameters", "Parameters of the model (all tensor-parallel shards), after compression");
  compression_passes_ = counter("mlagpt_compression_passes_total", "Compression passes run");
  const auto layer_gauges = [&](const std::string& name, const std::string& help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Labels(labels_).Register(registry);
  };
  layer_rank_ = layer_gauges("mlagpt_compressed_layer_rank", "Rank of a compressed projection after the last pass");
  layer_error_ = layer_gauges("mlagpt_compressed_layer_relative_error_ratio",
                              "Relative Frobenius error of a projection's last compression");
  layer_energy_ = layer_gauges("mlagpt_compressed_layer_kept_energy_ratio",
                               "Share of a projection's squared singular values its last compression kept");
  data_wait_seconds_ =
      counter("mlagpt_data_wait_seconds_total", "Time the training thread waited for the data loader's next batch");
  const auto collective_counters = [&](const std::string& name, const std::string& help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Labels(labels_).Register(registry);
  };
  collective_seconds_ = collective_counters("mlagpt_collective_seconds_total",
                                            "Host time blocked in collectives, by process group and kind");
  collective_bytes_ =
      collective_counters("mlagpt_collective_bytes_total", "Bytes of the collectives' tensors, by group and kind");
  collectives_ = collective_counters("mlagpt_collectives_total", "Collectives run, by process group and kind");
  const auto memory_gauge = [&](const std::string& name, const std::string& help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Labels(labels_).Register(registry).Add(
        {{"device", identity.device}});
  };
  memory_allocated_ = memory_gauge("mlagpt_device_memory_allocated_bytes", "Device memory in live tensors");
  memory_reserved_ =
      memory_gauge("mlagpt_device_memory_reserved_bytes", "Device memory held by the allocator (CPU: resident set)");
  memory_peak_ =
      memory_gauge("mlagpt_device_memory_peak_bytes", "Most device memory ever allocated (CPU: largest resident set)");
  gauge("mlagpt_process_start_time_seconds", "Start time of the process, in seconds since the Unix epoch")
      ->Set(process_start_time());
  prometheus::BuildGauge()
      .Name("mlagpt_build_info")
      .Help("What this process was built from, in its labels; always 1")
      .Labels(labels_)
      .Register(registry)
      .Add(identity.build)
      .Set(1);
}

prometheus::Gauge& PrometheusSink::event_gauge(prometheus::Gauge*& gauge, const std::string& name,
                                               const std::string& help) {
  if (gauge == nullptr) {
    gauge = &prometheus::BuildGauge().Name(name).Help(help).Labels(labels_).Register(registry_).Add({});
  }
  return *gauge;
}

void PrometheusSink::record(const CompressionMetrics& m) {
  event_gauge(compression_seconds_, "mlagpt_compression_seconds", "Wall time of the last compression pass on this rank")
      .Set(m.seconds);
  compression_passes_->Increment();  // mlagpt_model_parameters follows with the next RuntimeMetrics
  // One series per compressed layer (a bounded label: the model's projections), never per step.
  for (const CompressedLayer& layer : m.layers) {
    const std::map<std::string, std::string> labels{{"layer", layer.layer}};
    layer_rank_->Add(labels).Set(static_cast<double>(layer.rank));
    layer_error_->Add(labels).Set(layer.relative_error);
    layer_energy_->Add(labels).Set(layer.kept_energy);
  }
}

void PrometheusSink::record(const CheckpointMetrics& m) {
  if (m.save) {
    event_gauge(checkpoint_save_seconds_, "mlagpt_checkpoint_save_seconds", "Wall time of the last checkpoint save")
        .Set(m.seconds);
  } else {
    event_gauge(checkpoint_load_seconds_, "mlagpt_checkpoint_load_seconds", "Wall time of the last checkpoint load")
        .Set(m.seconds);
  }
  (m.save ? checkpoint_saves_ : checkpoint_loads_)->Increment();
  (m.save ? checkpoint_written_bytes_ : checkpoint_read_bytes_)->Increment(static_cast<double>(m.bytes));
}

void PrometheusSink::record(const StepMetrics& m) {
  step_->Set(static_cast<double>(m.step));
  loss_->Set(m.loss);
  learning_rate_->Set(m.learning_rate);
  grad_norm_->Set(m.grad_norm);
  step_seconds_->Observe(m.step_seconds);
  tokens_per_second_->Set(m.tokens_per_second);
  if (m.mfu) {
    if (mfu_ == nullptr) {  // only where the device's peak is known: no zero that looks like a measurement
      mfu_ = &prometheus::BuildGauge()
                  .Name("mlagpt_mfu_ratio")
                  .Help("Model FLOPs utilization of the last steps (model FLOPs / peak FLOPs of the job's devices)")
                  .Labels(labels_)
                  .Register(registry_)
                  .Add({});
    }
    mfu_->Set(*m.mfu);
  }
  tokens_->Increment(static_cast<double>(m.rank_tokens));
  steps_->Increment();
  if (m.skipped_steps_total > nonfinite_seen_) {
    nonfinite_steps_->Increment(static_cast<double>(m.skipped_steps_total - nonfinite_seen_));
    nonfinite_seen_ = m.skipped_steps_total;
  }
}

void PrometheusSink::record(const EvalMetrics& m) {
  event_gauge(eval_loss_, "mlagpt_eval_loss", "Validation loss of the last evaluation (nats per token)").Set(m.loss);
  event_gauge(eval_perplexity_, "mlagpt_eval_perplexity", "Validation perplexity of the last evaluation")
      .Set(m.perplexity);
}

void PrometheusSink::record(const RuntimeMetrics& m) {
  if (m.data_wait_seconds_total > data_wait_seen_) {
    data_wait_seconds_->Increment(m.data_wait_seconds_total - data_wait_seen_);
    data_wait_seen_ = m.data_wait_seconds_total;
  }
  for (const CollectiveSample& sample : m.collectives) {
    const std::map<std::string, std::string> labels{{"group", sample.group}, {"op", sample.op}};
    CollectiveSample& seen = collectives_seen_[{sample.group, sample.op}];
    // Increments only: a counter never goes down, and totals only grow.
    collective_seconds_->Add(labels).Increment(std::max(0.0, sample.seconds - seen.seconds));
    collective_bytes_->Add(labels).Increment(static_cast<double>(std::max<int64_t>(0, sample.bytes - seen.bytes)));
    collectives_->Add(labels).Increment(static_cast<double>(std::max<int64_t>(0, sample.count - seen.count)));
    seen = sample;
  }
  memory_allocated_->Set(static_cast<double>(m.memory_allocated_bytes));
  memory_reserved_->Set(static_cast<double>(m.memory_reserved_bytes));
  memory_peak_->Set(static_cast<double>(m.memory_peak_bytes));
  model_parameters_->Set(static_cast<double>(m.model_parameters));
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

void MetricsFanout::record(const RuntimeMetrics& metrics) {
  for (auto& sink : sinks_) {
    sink->record(metrics);
  }
}

void MetricsFanout::record(const RunStartMetrics& metrics) {
  for (auto& sink : sinks_) {
    sink->record(metrics);
  }
}

}  // namespace mlagpt::monitoring
