#include "trainer/train_config.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <set>

#include "launch/error.h"
#include "trainer/compression/compression.h"
#include "trainer/config_file.h"

namespace mlagpt::trainer {
namespace {

void require(bool ok, const std::string& message) {
  if (!ok) {
    throw ConfigError(message);
  }
}

void require_one_of(const std::string& field, const std::string& value, const std::set<std::string>& accepted) {
  if (accepted.count(value) == 0) {
    std::string names;
    for (const auto& name : accepted) {
      names += fmt::format("{}{}", names.empty() ? "" : ", ", name);
    }
    throw ConfigError(fmt::format("{} = '{}' is not one of {}", field, value, names));
  }
}

// Applies one value to the section it names.
void apply(TrainConfig& config, const ConfigValue& value) {
  if (value.section.empty()) {
    throw ConfigError(fmt::format("{}: a key outside any [section]", value.where));
  }
  bool found = false;
  std::string sections;
  config.visit_sections([&](std::string_view name, auto& section) {
    sections += fmt::format("{}{}", sections.empty() ? "" : ", ", name);
    if (name == value.section) {
      found = true;
      apply_value(value, section);
    }
  });
  if (!found) {
    throw ConfigError(fmt::format("{}: unknown section [{}] (sections: {})", value.where, value.section, sections));
  }
}

}  // namespace

void TrainConfig::resolve() {
  model.resolve();
  require_one_of("run.device", run.device, {"auto", "cpu", "cuda"});
  require_one_of("run.dtype", run.dtype, {"auto", "float32", "bfloat16"});
  require(run.threads >= 0,
          fmt::format("run.threads must be >= 0 (0 = the CPUs / the ranks on the node), got {}", run.threads));
  require(run.max_steps > 0, fmt::format("run.max_steps must be positive, got {}", run.max_steps));
  require(run.log_every > 0, fmt::format("run.log_every must be positive, got {}", run.log_every));
  require(run.max_bad_steps > 0, fmt::format("run.max_bad_steps must be positive, got {}", run.max_bad_steps));
  require(!run.out_dir.empty(), "run.out_dir must not be empty");
  require(!data.dir.empty(), "data.dir is required: a dataset directory written by `mlagpt prepare`");
  require(data.batch_size > 0, fmt::format("data.batch_size must be positive, got {}", data.batch_size));
  require(data.seq_len >= 0 && data.seq_len <= model.block_size,
          fmt::format("data.seq_len ({}) must be in [0, model.block_size ({})] (0 = block_size)", data.seq_len,
                      model.block_size));
  require(data.prefetch > 0, fmt::format("data.prefetch must be positive, got {}", data.prefetch));
  require(optim.lr > 0, fmt::format("optim.lr must be positive, got {}", optim.lr));
  require(optim.weight_decay >= 0, fmt::format("optim.weight_decay must be >= 0, got {}", optim.weight_decay));
  require(optim.beta1 >= 0 && optim.beta1 < 1, fmt::format("optim.beta1 must be in [0, 1), got {}", optim.beta1));
  require(optim.beta2 >= 0 && optim.beta2 < 1, fmt::format("optim.beta2 must be in [0, 1), got {}", optim.beta2));
  require(optim.eps > 0, fmt::format("optim.eps must be positive, got {}", optim.eps));
  require(optim.grad_clip >= 0, fmt::format("optim.grad_clip must be >= 0 (0 = off), got {}", optim.grad_clip));
  require(optim.grad_accum > 0, fmt::format("optim.grad_accum must be positive, got {}", optim.grad_accum));
  require(schedule.warmup_steps >= 0, fmt::format("schedule.warmup_steps must be >= 0, got {}", schedule.warmup_steps));
  require(schedule.decay_steps >= 0, fmt::format("schedule.decay_steps must be >= 0, got {}", schedule.decay_steps));
  require(decay_steps() >= schedule.warmup_steps,
          fmt::format("the cosine decay ends at step {} (schedule.decay_steps or run.max_steps), before the warmup "
                      "(schedule.warmup_steps = {}) does",
                      decay_steps(), schedule.warmup_steps));
  require(schedule.min_lr >= 0 && schedule.min_lr <= optim.lr,
          fmt::format("schedule.min_lr ({}) must be in [0, optim.lr ({})]", schedule.min_lr, optim.lr));
  require(eval.every >= 0, fmt::format("eval.every must be >= 0 (0 = never), got {}", eval.every));
  require(eval.batches > 0, fmt::format("eval.batches must be positive, got {}", eval.batches));
  require(eval.sample_tokens >= 0, fmt::format("eval.sample_tokens must be >= 0, got {}", eval.sample_tokens));
  require(checkpoint.every >= 0,
          fmt::format("checkpoint.every must be >= 0 (0 = at the end), got {}", checkpoint.every));
  require(checkpoint.keep >= 1, fmt::format("checkpoint.keep must be at least 1, got {}", checkpoint.keep));
  require_one_of("monitoring.log_level", monitoring.log_level,
                 {"trace", "debug", "info", "warn", "error", "critical", "off"});
  require(monitoring.peak_flops >= 0, fmt::format("monitoring.peak_flops must be >= 0, got {}", monitoring.peak_flops));
  if (monitoring.job.empty()) {  // runs/mla-tiny -> mla-tiny
    const std::filesystem::path out = std::filesystem::path(run.out_dir).lexically_normal();
    monitoring.job = out.has_filename() ? out.filename().string() : out.parent_path().filename().string();
    if (monitoring.job.empty() || monitoring.job == "." || monitoring.job == "..") {
      monitoring.job = "mlagpt";
    }
  }
  require(parallel.tp >= 1, fmt::format("parallel.tp must be at least 1, got {}", parallel.tp));
  // Sampling (model/generation.h) runs the whole model in one process.
  require(eval.sample_tokens == 0 || parallel.tp == 1,
          fmt::format("eval.sample_tokens = {} samples with the whole model in one process, and parallel.tp = {} "
                      "splits it; set eval.sample_tokens = 0 and sample from a checkpoint with `mlagpt sample`",
                      eval.sample_tokens, parallel.tp));
  require(parallel.bucket_mb > 0, fmt::format("parallel.bucket_mb must be positive, got {}", parallel.bucket_mb));
  require(parallel.timeout_s >= 0,
          fmt::format("parallel.timeout_s must be >= 0 (0 = no watchdog), got {}", parallel.timeout_s));
  require(parallel.timeout_s == 0 || parallel.startup_timeout_s >= parallel.timeout_s,
          fmt::format("parallel.startup_timeout_s ({}) must be at least parallel.timeout_s ({})",
                      parallel.startup_timeout_s, parallel.timeout_s));
  require(parallel.collective_history >= 1,
          fmt::format("parallel.collective_history must be at least 1, got {}", parallel.collective_history));
  require(parallel.zero == 0 || parallel.zero == 1,
          fmt::format("parallel.zero must be 0 (replicated optimizer) or 1 (sharded optimizer state), got {}",
                      parallel.zero));
  require(compress.every >= 0, fmt::format("compress.every must be >= 0 (0 = never), got {}", compress.every));
  require(compress.start_step >= 0,
          fmt::format("compress.start_step must be >= 0 (0 = compress.every), got {}", compress.start_step));
  parse_compress_mode("compress.mode", compress.mode);
  require(compress.oversample >= 0, fmt::format("compress.oversample must be >= 0, got {}", compress.oversample));
  require(compress.power_iters >= 0, fmt::format("compress.power_iters must be >= 0, got {}", compress.power_iters));
  require(compress.rank >= 0 && compress.svd_rank >= 0,
          fmt::format("compress.rank ({}) and compress.svd_rank ({}) must be >= 0", compress.rank, compress.svd_rank));
  require(compress.energy >= 0 && compress.energy <= 1,
          fmt::format("compress.energy must be in (0, 1] (0 = not this rule), got {}", compress.energy));
  require(compress.param_ratio >= 0 && compress.param_ratio < 1,
          fmt::format("compress.param_ratio must be in (0, 1) (0 = not this rule), got {}", compress.param_ratio));
  if (compress.svd_rank > 0) {
    require(compress.targets.empty() && compress.rank == 0,
            fmt::format("compress.svd_rank = {} names the targets (the key/value up-projections) and the rank; leave "
                        "compress.targets ('{}') and compress.rank ({}) unset with it",
                        compress.svd_rank, compress.targets, compress.rank));
  }
  const int rules = static_cast<int>(compress.rank > 0 || compress.svd_rank > 0) +
                    static_cast<int>(compress.energy > 0) + static_cast<int>(compress.param_ratio > 0);
  if (compress.enabled()) {
    require(rules == 1,
            fmt::format("[compress] needs exactly one rank rule: rank (or svd_rank), energy or param_ratio; got rank "
                        "= {}, svd_rank = {}, energy = {}, param_ratio = {}",
                        compress.rank, compress.svd_rank, compress.energy, compress.param_ratio));
    require(!compress.target_globs(model.attention).empty(),
            "compress.targets is empty: name the projections to compress (e.g. blocks.*.mlp.*), or set svd_rank");
  } else {
    require(rules == 0 && compress.targets.empty(),
            "[compress] names targets or a rank rule but compress.every is 0: set compress.every (steps between "
            "passes) to compress");
  }
}

std::string CompressConfig::target_globs(model::AttentionKind attention) const {
  if (svd_rank > 0) {
    return attention == model::AttentionKind::kMla ? "blocks.*.attn.kv_up"
                                                   : "blocks.*.attn.k_proj,blocks.*.attn.v_proj";
  }
  return targets;
}

std::filesystem::path TrainConfig::checkpoint_dir() const {
  return checkpoint.dir.empty() ? std::filesystem::path(run.out_dir) / "checkpoints"
                                : std::filesystem::path(checkpoint.dir);
}

TrainConfig read_train_config(const std::filesystem::path& file, const std::vector<std::string>& overrides) {
  TrainConfig config;
  if (!file.empty()) {
    std::vector<std::string> sections;
    config.visit_sections([&sections](std::string_view name, auto&) { sections.emplace_back(name); });
    for (const ConfigValue& value : read_config_values(file, sections)) {
      apply(config, value);
    }
  }
  for (const ConfigValue& value : parse_overrides(overrides)) {
    apply(config, value);
  }
  try {
    config.resolve();
  } catch (const ConfigError& e) {
    throw ConfigError(file.empty() ? std::string(e.what()) : fmt::format("{}: {}", file.string(), e.what()));
  }
  return config;
}

nlohmann::json to_json(const TrainConfig& config) {
  nlohmann::json json = nlohmann::json::object();
  const_cast<TrainConfig&>(config).visit_sections([&json](std::string_view name, auto& section) {
    using Section = std::decay_t<decltype(section)>;
    if constexpr (std::is_same_v<Section, model::ModelConfig>) {
      json[std::string(name)] = model::to_json(section);
    } else {
      nlohmann::json fields = nlohmann::json::object();
      section.visit_fields([&fields](std::string_view key, const auto& value) { fields[std::string(key)] = value; });
      json[std::string(name)] = fields;
    }
  });
  return json;
}

TrainConfig train_config_from_json(const nlohmann::json& json, std::string_view source) {
  if (!json.is_object()) {
    throw ConfigError(fmt::format("{}: the config must be a JSON object", source));
  }
  // Through the same typed assignment as files and overrides: a JSON value keeps its type, as a TOML value does.
  TrainConfig config;
  for (const auto& [section, fields] : json.items()) {
    if (!fields.is_object()) {
      throw ConfigError(fmt::format("{}: [{}] must be an object", source, section));
    }
    for (const auto& [key, value] : fields.items()) {
      const std::string where = fmt::format("{}: [{}] {}", source, section, key);
      apply(config, ConfigValue{section, key, model::config_scalar_from_json(value, where), where});
    }
  }
  config.resolve();
  return config;
}

}  // namespace mlagpt::trainer
