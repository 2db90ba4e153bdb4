// TrainConfig: everything `mlagpt train` needs, as a tree of typed sections, one TOML table each:
//
//   [run] [model] [data] [optim] [schedule] [eval] [checkpoint] [monitoring] [parallel]
//
// read from a file (--config) with command-line overrides of any field (--optim.lr=3e-4), validated once, before
// any heavy work, with messages that name the field and the values. The resolved config is logged at start and
// stored in every checkpoint (to_json / train_config_from_json). Sections list their fields with visit_fields(),
// so readers, writers and comparisons never list them twice.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "model/model_config.h"

namespace mlagpt::trainer {

struct RunConfig {
  std::string out_dir = "runs/mlagpt";  // metrics.jsonl, checkpoints/ and the resolved config go here
  int64_t seed = 1337;
  std::string device = "auto";  // auto (cuda when available), cpu, cuda
  std::string dtype = "auto";   // auto (bfloat16 autocast on cuda, float32 on cpu), float32, bfloat16 (autocast)
  int64_t threads = 0;          // CPU intra-op threads; 0 = this process's CPUs / the ranks on its node
  int64_t max_steps = 1000;
  int64_t log_every = 1;
  int64_t max_bad_steps = 5;  // consecutive non-finite steps before the run stops
  template <typename V>
  void visit_fields(V&& v) {
    v("out_dir", out_dir);
    v("seed", seed);
    v("device", device);
    v("dtype", dtype);
    v("threads", threads);
    v("max_steps", max_steps);
    v("log_every", log_every);
    v("max_bad_steps", max_bad_steps);
  }
};

struct DataConfig {
  std::string dir;          // a dataset written by `mlagpt prepare`
  int64_t batch_size = 16;  // sequences per micro-batch per data-parallel rank
  int64_t seq_len = 0;      // tokens per sequence; 0 = model.block_size
  int64_t prefetch = 4;     // batches the loader thread prepares ahead
  template <typename V>
  void visit_fields(V&& v) {
    v("dir", dir);
    v("batch_size", batch_size);
    v("seq_len", seq_len);
    v("prefetch", prefetch);
  }
};

struct OptimConfig {
  double lr = 6e-4;           // peak learning rate
  double weight_decay = 0.1;  // decoupled (AdamW); never on norms, biases or embeddings
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;  // max global gradient norm; 0 = no clipping
  int64_t grad_accum = 1;  // micro-batches per optimizer step
  template <typename V>
  void visit_fields(V&& v) {
    v("lr", lr);
    v("weight_decay", weight_decay);
    v("beta1", beta1);
    v("beta2", beta2);
    v("eps", eps);
    v("grad_clip", grad_clip);
    v("grad_accum", grad_accum);
  }
};

struct ScheduleConfig {
  int64_t warmup_steps = 100;  // linear warmup: step s (from 0) gets optim.lr * (s + 1) / warmup_steps
  int64_t decay_steps = 0;     // cosine decay to min_lr ends here; 0 = run.max_steps
  double min_lr = 6e-5;
  template <typename V>
  void visit_fields(V&& v) {
    v("warmup_steps", warmup_steps);
    v("decay_steps", decay_steps);
    v("min_lr", min_lr);
  }
};

struct EvalConfig {
  int64_t every = 100;        // steps between evaluations; 0 = never
  int64_t batches = 20;       // validation batches per evaluation
  std::string sample_prompt;  // sampled after each evaluation when sample_tokens > 0
  int64_t sample_tokens = 0;
  template <typename V>
  void visit_fields(V&& v) {
    v("every", every);
    v("batches", batches);
    v("sample_prompt", sample_prompt);
    v("sample_tokens", sample_tokens);
  }
};

struct CheckpointConfig {
  int64_t every = 500;  // steps between checkpoints; 0 = only at the end
  int64_t keep = 3;     // complete checkpoints kept; older ones are removed
  std::string dir;      // "" = <run.out_dir>/checkpoints
  template <typename V>
  void visit_fields(V&& v) {
    v("every", every);
    v("keep", keep);
    v("dir", dir);
  }
};

struct MonitoringConfig {
  std::string metrics_address;  // "host:port" of the Prometheus exporter, + local rank; "" = off
  bool jsonl = true;            // <run.out_dir>/metrics.jsonl
  std::string log_level = "info";
  double peak_flops = 0;  // per device, for MFU; 0 = known default for the device (H100 bf16: 989e12)
  template <typename V>
  void visit_fields(V&& v) {
    v("metrics_address", metrics_address);
    v("jsonl", jsonl);
    v("log_level", log_level);
    v("peak_flops", peak_flops);
  }
};

// How the ranks share the work. The data-parallel size is the world size / tp; tensor-parallel groups are tp
// consecutive ranks of one node (launch/process_mesh.h).
struct ParallelConfig {
  int64_t tp = 1;                // tensor-parallel ranks per group
  bool tp_across_nodes = false;  // allow a tensor-parallel group to span nodes (slow: it talks every layer)
  double bucket_mb = 25;         // size of the flat gradient buckets reduced during backward (PyTorch DDP's 25)
  bool overlap = true;           // reduce each bucket as soon as backward fills it; false: after backward
  int64_t zero = 0;              // 1: shard the optimizer state over the data-parallel ranks (ZeRO-1)
  template <typename V>
  void visit_fields(V&& v) {
    v("tp", tp);
    v("tp_across_nodes", tp_across_nodes);
    v("bucket_mb", bucket_mb);
    v("overlap", overlap);
    v("zero", zero);
  }
};

struct TrainConfig {
  RunConfig run;
  model::ModelConfig model;
  DataConfig data;
  OptimConfig optim;
  ScheduleConfig schedule;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  MonitoringConfig monitoring;
  ParallelConfig parallel;

  template <typename V>
  void visit_sections(V&& v) {
    v("run", run);
    v("model", model);
    v("data", data);
    v("optim", optim);
    v("schedule", schedule);
    v("eval", eval);
    v("checkpoint", checkpoint);
    v("monitoring", monitoring);
    v("parallel", parallel);
  }

  // Resolves the model and the derived values, then checks every rule; throws ConfigError naming field and values.
  void resolve();
  std::filesystem::path checkpoint_dir() const;
  int64_t seq_len() const { return data.seq_len == 0 ? model.block_size : data.seq_len; }
  int64_t decay_steps() const { return schedule.decay_steps == 0 ? run.max_steps : schedule.decay_steps; }
};

// Reads `file` (may be empty: defaults only), applies `overrides` (--section.key=value arguments), and resolves.
TrainConfig read_train_config(const std::filesystem::path& file, const std::vector<std::string>& overrides);

nlohmann::json to_json(const TrainConfig& config);
TrainConfig train_config_from_json(const nlohmann::json& json, std::string_view source);

}  // namespace mlagpt::trainer
