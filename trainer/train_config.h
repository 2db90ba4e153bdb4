// TrainConfig: everything `mlagpt train` needs, as a tree of typed sections, one TOML table each:
//
//   [run] [model] [data] [optim] [schedule] [eval] [checkpoint] [monitoring] [parallel] [compress]
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
  std::string job;        // the job label of every metric; "" = the last component of run.out_dir
  std::string
      targets_file;  // where rank 0 writes every rank's scrape target; "" = <run.out_dir>/prometheus-targets.json
  template <typename V>
  void visit_fields(V&& v) {
    v("metrics_address", metrics_address);
    v("job", job);
    v("targets_file", targets_file);
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
  // The collective watchdog (launch/watchdog.h), with more than one process: a collective not complete after
  // timeout_s (startup_timeout_s until the first step is done, and for checkpoints and compression passes) ends the
  // job with a report of the last collective_history collectives of every rank that can still speak. 0 = off.
  double timeout_s = 600;
  double startup_timeout_s = 1800;
  int64_t collective_history = 32;
  template <typename V>
  void visit_fields(V&& v) {
    v("tp", tp);
    v("tp_across_nodes", tp_across_nodes);
    v("bucket_mb", bucket_mb);
    v("overlap", overlap);
    v("zero", zero);
    v("timeout_s", timeout_s);
    v("startup_timeout_s", startup_timeout_s);
    v("collective_history", collective_history);
  }
};

// Periodic compression of projections during training (trainer/compression/compression.h, docs/design.md
// "Compression"): a pass after optimizer step start_step, start_step + every, ... (start_step 0 = every).
struct CompressConfig {
  int64_t every = 0;               // steps between passes; 0 = never
  int64_t start_step = 0;          // the first pass; 0 = `every`
  std::string targets;             // projection-path globs, comma-separated: "blocks.*.mlp.*,blocks.*.attn.kv_up"
  int64_t rank = 0;                // the rank rule: exactly one of rank, energy, param_ratio (or svd_rank)
  double energy = 0;               // the smallest rank keeping this share of the squared singular values
  double param_ratio = 0;          // the rank whose factors keep this share of the dense layer's weights
  std::string mode = "factorize";  // factorize (W -> B A) or project (W -> its rank-k approximation, dense)
  int64_t oversample = 10;         // randomized SVD: sketch width rank + oversample
  int64_t power_iters = 2;         // randomized SVD: power iterations
  // The key/value up-projections at this rank: MLA's attn.kv_up, or attn.k_proj and attn.v_proj; instead of
  // targets and rank. (Not an SVD of activations, which would mix future positions into the past: docs/mla.md.)
  int64_t svd_rank = 0;

  template <typename V>
  void visit_fields(V&& v) {
    v("every", every);
    v("start_step", start_step);
    v("targets", targets);
    v("rank", rank);
    v("energy", energy);
    v("param_ratio", param_ratio);
    v("mode", mode);
    v("oversample", oversample);
    v("power_iters", power_iters);
    v("svd_rank", svd_rank);
  }
  bool enabled() const { return every > 0; }
  int64_t first_step() const { return start_step == 0 ? every : start_step; }
  // Whether a pass runs after optimizer step `step` (1-based: steps completed).
  bool due(int64_t step) const { return enabled() && step >= first_step() && (step - first_step()) % every == 0; }
  // The globs: `targets`, or svd_rank's up-projections for `attention`.
  std::string target_globs(model::AttentionKind attention) const;
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
  CompressConfig compress;

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
    v("compress", compress);
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
