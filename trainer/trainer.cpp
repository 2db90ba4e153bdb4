#include "trainer/trainer.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>
#include <c10/util/hash.h>
#include <torch/version.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>

#include "launch/backend_versions.h"
#include "launch/error.h"
#include "mlagpt/build_info.h"
#include "model/accounting.h"
#include "monitoring/device_memory.h"
#include "trainer/optimizer.h"

namespace mlagpt::trainer {
namespace {

namespace fs = std::filesystem;

// Peak dense bf16 FLOP/s of the devices we know, for MFU when monitoring.peak_flops is not set.
double known_peak_flops(const std::string& device_name) {
  if (device_name.find("H100") != std::string::npos || device_name.find("H200") != std::string::npos) {
    return 989e12;
  }
  return 0;
}

std::string human_count(double value) {
  if (value >= 1e9) {
    return fmt::format("{:.2f}G", value / 1e9);
  }
  if (value >= 1e6) {
    return fmt::format("{:.2f}M", value / 1e6);
  }
  if (value >= 1e3) {
    return fmt::format("{:.1f}k", value / 1e3);
  }
  return fmt::format("{:.0f}", value);
}

// A seed from two numbers (run.seed and a rank or a step), well mixed.
uint64_t mix(uint64_t a, uint64_t b) {
  return c10::twang_mix64(a ^ (b + 0x9E3779B97F4A7C15ULL));
}

// The labels of mlagpt_build_info.
std::map<std::string, std::string> build_labels() {
  return {{"version", MLAGPT_VERSION},
          {"build_type", MLAGPT_BUILD_TYPE},
          {"compiler", MLAGPT_COMPILER},
          {"torch", TORCH_VERSION},
#ifdef MLAGPT_WITH_CUDA
          {"cuda", "yes"},
#else
          {"cuda", "no"},
#endif
          {"prometheus_cpp", monitoring::prometheus_cpp_version()}};
}

// One rank's Prometheus scrape target.
struct RankTarget {
  std::string target;  // host:port
  int local_rank = 0;
  std::string node;
};

// Every rank's target, indexed by world rank: gathered over the tensor-parallel group, then the data-parallel one
// (world rank = dp rank x tp + tp rank, launch/process_mesh.h), as fixed-width character codes.
std::vector<RankTarget> gather_targets(const RankTarget& own, const launch::ProcessMesh& mesh,
                                       const c10::Device& device) {
  constexpr int64_t kWidth = 512;
  const std::string line = fmt::format("{}\t{}\t{}", own.target, own.local_rank, own.node);
  if (static_cast<int64_t>(line.size()) >= kWidth) {
    throw ConfigError(fmt::format("metrics: the scrape target '{}' of host {} is too long", own.target, own.node));
  }
  std::vector<int64_t> own_codes(kWidth, 0);  // int64: a dtype every backend reduces and gathers
  std::transform(line.begin(), line.end(), own_codes.begin(), [](char c) { return static_cast<unsigned char>(c); });
  const at::Tensor mine = at::tensor(own_codes, at::TensorOptions().dtype(at::kLong)).to(device);
  at::Tensor group = at::zeros({mesh.tp_size() * kWidth}, mine.options());
  mesh.tp().all_gather(mine, group);
  at::Tensor world = at::zeros({mesh.world_size() * kWidth}, mine.options());
  mesh.dp().all_gather(group, world);
  world = world.cpu();
  const int64_t* codes = world.data_ptr<int64_t>();
  std::vector<RankTarget> targets;
  for (int rank = 0; rank < mesh.world_size(); ++rank) {
    std::string text;
    for (int64_t i = 0; i < kWidth && codes[rank * kWidth + i] != 0; ++i) {
      text.push_back(static_cast<char>(codes[rank * kWidth + i]));
    }
    const size_t first = text.find('\t');
    const size_t second = text.find('\t', first + 1);
    targets.push_back({.target = text.substr(0, first),
                       .local_rank = std::stoi(text.substr(first + 1, second - first - 1)),
                       .node = text.substr(second + 1)});
  }
  return targets;
}

// A Prometheus file_sd file: one group per rank, labelled rank, local_rank and node (what launch/mlagpt-run writes).
// Written to a temporary name and renamed, so Prometheus, which rereads the file when it changes, never sees half.
void write_targets_file(const fs::path& file, const std::vector<RankTarget>& targets) {
  nlohmann::json groups = nlohmann::json::array();
  for (size_t rank = 0; rank < targets.size(); ++rank) {
    groups.push_back({{"targets", {targets[rank].target}},
                      {"labels",
                       {{"rank", std::to_string(rank)},
                        {"local_rank", std::to_string(targets[rank].local_rank)},
                        {"node", targets[rank].node}}}});
  }
  if (file.has_parent_path()) {
    fs::create_directories(file.parent_path());
  }
  const fs::path tmp = fs::path(file.string() + ".tmp");
  {
    std::ofstream out(tmp);
    out << groups.dump(2) << '\n';
    out.close();
    if (!out) {
      fs::remove(tmp);
      throw IoError(
          fmt::format("metrics: cannot write the Prometheus targets file {} (monitoring.targets_file)", file.string()));
    }
  }
  fs::rename(tmp, file);
}

}  // namespace

c10::Device select_device(const RunConfig& run, const launch::ProcessInfo& process) {
  const int gpus = launch::cuda_device_count();
  if (run.device == "cpu" || (run.device == "auto" && gpus == 0)) {
    return c10::Device(c10::kCPU);
  }
  if (gpus == 0) {
    throw ConfigError("run.device = 'cuda' but no CUDA device is visible (or this build has no CUDA)");
  }
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(process.local_rank % gpus));
}

std::vector<fs::path> Dataset::train_shards() const {
  std::vector<fs::path> paths;
  for (const auto& shard : manifest.train.shards) {
    paths.push_back(dir / shard.file);
  }
  return paths;
}

std::vector<fs::path> Dataset::val_shards() const {
  std::vector<fs::path> paths;
  for (const auto& shard : manifest.val.shards) {
    paths.push_back(dir / shard.file);
  }
  return paths;
}

DatasetIdentity Dataset::identity() const {
  return {manifest.tokenizer.name, manifest.tokenizer.sha256, manifest.tokenizer.vocab_size};
}

int64_t padded_vocab_size(int64_t dataset_vocab_size) {
  return (dataset_vocab_size + kVocabMultiple - 1) / kVocabMultiple * kVocabMultiple;
}

Dataset open_dataset(const fs::path& dir, model::ModelConfig& model) {
  Dataset dataset;
  dataset.dir = dir;
  dataset.manifest = data::read_dataset_manifest(dir);
  dataset.tokenizer = data::load_tokenizer(dir, dataset.manifest.tokenizer.name);
  const int64_t vocab = dataset.manifest.tokenizer.vocab_size;
  if (model.vocab_size == 0) {
    model.vocab_size = padded_vocab_size(vocab);
  } else if (model.vocab_size < vocab) {
    throw ConfigError(fmt::format(
        "model.vocab_size ({}) is smaller than the vocabulary of the dataset {} ({}, {}); leave it out to use the "
        "dataset's",
        model.vocab_size, dir.string(), vocab, dataset.manifest.tokenizer.name));
  }
  if (dataset.manifest.train.shards.empty()) {
    throw DataError(fmt::format("{}: the dataset has no training shards", dir.string()));
  }
  return dataset;
}

Trainer::Trainer(TrainConfig config, const launch::Runtime& runtime)
    : config_(std::move(config)), runtime_(runtime), device_(select_device(config_.run, runtime.info())) {
  const auto& process = runtime_.info();
  const int cpus = launch::available_cpus();
  const int threads = config_.run.threads > 0 ? static_cast<int>(config_.run.threads)
                                              : launch::threads_per_process(cpus, process.local_size);
  at::set_num_threads(threads);
  if (process.rank == 0) {
    spdlog::info("run.threads = {}{}", threads,
                 config_.run.threads > 0
                     ? std::string()
                     : fmt::format(" intra-op threads per process ({} CPUs / {} process(es) on this node)", cpus,
                                   process.local_size));
  }
  const bool vocab_from_dataset = config_.model.vocab_size == 0;
  dataset_ = open_dataset(config_.data.dir, config_.model);
  if (vocab_from_dataset && process.rank == 0) {
    spdlog::info(
        "model.vocab_size = {} from the dataset ({} tokens of its {} tokenizer, rounded up to a multiple of {})",
        config_.model.vocab_size, dataset_.manifest.tokenizer.vocab_size, dataset_.manifest.tokenizer.name,
        kVocabMultiple);
  }
  // Once the vocabulary is known and before the first collective: every rank sees the same values, so every rank
  // stops here alike.
  config_.model.validate_tensor_parallel(config_.parallel.tp);
  if (process.world_size > 1 && config_.parallel.timeout_s > 0) {
    watchdog_ = std::make_unique<launch::CollectiveWatchdog>(
        launch::WatchdogOptions{.timeout_s = config_.parallel.timeout_s,
                                .startup_timeout_s = config_.parallel.startup_timeout_s,
                                .history = static_cast<int>(config_.parallel.collective_history)},
        fmt::format("rank {} on host {} (pid {})", process.rank, process.host, getpid()),
        [](const std::string& report) { spdlog::critical("[watchdog] {}", report); },
        [this] {
          spdlog::critical("[watchdog] ending the job (exit status {})", launch::kWatchdogExitCode);
          runtime_.end_job(launch::kWatchdogExitCode);
        });
  }
  mesh_ = std::make_unique<launch::ProcessMesh>(runtime_,
                                                launch::MeshOptions{.tp = config_.parallel.tp,
                                                                    .tp_across_nodes = config_.parallel.tp_across_nodes,
                                                                    .device = device_,
                                                                    .watchdog = watchdog_.get(),
                                                                    .meter = &collective_meter_});
  data_parallel_ = &mesh_->dp();
  tensor_parallel_ = std::make_unique<TensorParallelGroup>(mesh_->tp(), device_);
  if (process.world_size > 1) {  // where each rank landed: one line per rank, for multi-node set-ups
    spdlog::info(
        "[launch] rank {}/{} on host {} (pid {}): local rank {}/{}, dp rank {}/{}, tp rank {}/{}, device {}, "
        "CPUs {}",
        process.rank, process.world_size, process.host, getpid(), process.local_rank, process.local_size,
        mesh_->dp_rank(), mesh_->dp_size(), mesh_->tp_rank(), mesh_->tp_size(), device_.str(), launch::affinity_list());
  }

  // Every rank draws the whole initial model from the same seed and keeps its slice of the split parameters, so the
  // replicas agree and the slices make up one model.
  at::manual_seed(static_cast<uint64_t>(config_.run.seed));
  model_ = std::make_shared<model::Gpt>(config_.model, *tensor_parallel_);
  model_->to(device_);
  if (config_.compress.enabled()) {  // a glob that matches nothing is an error now, not at the first pass
    select_targets(*model_, split_targets(config_.compress.target_globs(config_.model.attention)));
  }
  rebuild_optimizer(false);

  data::LoaderConfig train_data{.shards = dataset_.train_shards(),
                                .batch_size = config_.data.batch_size,
                                .seq_len = config_.seq_len(),
                                .rank = mesh_->dp_rank(),
                                .world_size = mesh_->dp_size(),
                                .seed = static_cast<uint64_t>(config_.run.seed),
                                .prefetch = config_.data.prefetch,
                                .device = device_};
  data::LoaderConfig val_data = train_data;
  val_data.shards = dataset_.val_shards();
  loader_ = std::make_unique<data::TokenLoader>(std::move(train_data));
  if (!val_data.shards.empty() && config_.eval.every > 0) {
    evaluator_ = std::make_unique<Evaluator>(std::move(val_data), config_.eval.batches, *data_parallel_);
  }

  if (config_.monitoring.jsonl && process.rank == 0) {
    metrics_.add(std::make_unique<monitoring::JsonlSink>(fs::path(config_.run.out_dir) / "metrics.jsonl"));
  }
  if (!config_.monitoring.metrics_address.empty()) {
    start_metrics_exporter();
  }
  flops_per_token_ = model::training_flops_per_token(config_.model, config_.seq_len());
  peak_flops_ = config_.monitoring.peak_flops > 0
                    ? config_.monitoring.peak_flops
                    : (device_.is_cuda() ? known_peak_flops(launch::cuda_device_name(device_.index())) : 0.0);
  if (process.rank == 0) {
    fs::create_directories(config_.run.out_dir);
    std::ofstream(fs::path(config_.run.out_dir) / "config.json") << to_json(config_).dump(2) << '\n';
    spdlog::info("config: {}", to_json(config_).dump());
    spdlog::info("model: {} parameters, {} attention, device {}, {}, {} tokens per step",
                 model::count_parameters(config_.model).total, model::to_string(config_.model.attention), device_.str(),
                 mesh_->describe(),
                 config_.data.batch_size * config_.seq_len() * config_.optim.grad_accum * data_parallel_->size());
    const FlatLayout& layout = optimizer_->layout();
    const double mib = 1 << 20;
    spdlog::info(
        "optimizer: AdamW over {} flat bucket(s) of about {} MiB, reduced {}; state {:.2f} MiB per rank ({}; a "
        "replica's is {:.2f} MiB, {} padding elements)",
        layout.buckets.size(), config_.parallel.bucket_mb,
        config_.parallel.overlap ? "during backward" : "after backward",
        static_cast<double>(optimizer_->state_bytes()) / mib,
        optimizer_->zero() ? fmt::format("ZeRO-1 over {} data-parallel ranks", data_parallel_->size()) : "replicated",
        static_cast<double>(layout.parameter_numel()) * 2 * sizeof(float) / mib,
        layout.padded_numel() - layout.parameter_numel());
  }
}

Trainer::~Trainer() = default;

void Trainer::rebuild_optimizer(bool keep_state) {
  // The old state by parameter name, whole: each rank's held slices, and under ZeRO-1 the sum over the ranks (each
  // element is held by one of them).
  std::map<std::string, std::pair<at::Tensor, at::Tensor>, std::less<>> moments;
  int64_t steps = 0;
  if (keep_state && optimizer_) {
    steps = optimizer_->step_count();
    const FlatLayout& layout = optimizer_->layout();
    for (const FlatParam& param : layout.params) {
      const at::TensorOptions options = at::TensorOptions().dtype(at::kFloat).device(device_);
      moments[param.name] = {at::zeros({param.numel}, options), at::zeros({param.numel}, options)};
    }
    for (const StateSlice& slice : optimizer_->held_slices()) {
      auto& [exp_avg, exp_avg_sq] = moments.at(layout.params[static_cast<size_t>(slice.param)].name);
      exp_avg.narrow(0, slice.begin, slice.end - slice.begin).copy_(slice.exp_avg);
      exp_avg_sq.narrow(0, slice.begin, slice.end - slice.begin).copy_(slice.exp_avg_sq);
    }
    if (optimizer_->zero()) {
      for (const FlatParam& param : layout.params) {  // the same order on every rank
        auto& [exp_avg, exp_avg_sq] = moments.at(param.name);
        data_parallel_->all_reduce(exp_avg);
        data_parallel_->all_reduce(exp_avg_sq);
      }
    }
  }
  // The reduction's hooks and the step refer to the old optimizer: they go first.
  train_step_.reset();
  reducer_.reset();
  auto optimizer = std::make_unique<FlatAdamW>(
      adamw_parameters(*model_), adamw_settings(config_.optim),
      FlatOptions{.bucket_bytes = static_cast<int64_t>(config_.parallel.bucket_mb * (1 << 20)),
                  .zero = config_.parallel.zero == 1},
      *data_parallel_);
  if (keep_state && optimizer_) {
    optimizer->set_step_count(steps);
    const c10::NoGradGuard no_grad;
    for (const StateSlice& slice : optimizer->held_slices()) {
      const FlatParam& param = optimizer->layout().params[static_cast<size_t>(slice.param)];
      const auto found = moments.find(param.name);
      if (found == moments.end() || found->second.first.numel() != param.numel) {
        continue;  // a new parameter (compression's factors): zero moments
      }
      slice.exp_avg.copy_(found->second.first.narrow(0, slice.begin, slice.end - slice.begin));
      slice.exp_avg_sq.copy_(found->second.second.narrow(0, slice.begin, slice.end - slice.begin));
    }
  }
  optimizer_ = std::move(optimizer);
  reducer_ = std::make_unique<GradReducer>(*optimizer_, config_.parallel.overlap, *tensor_parallel_);
  train_step_ = std::make_unique<TrainStep>(*model_, *optimizer_, *reducer_, config_, *data_parallel_);
  checkpointer_ = std::make_unique<Checkpointer>(config_.checkpoint_dir(), config_.checkpoint.keep, *data_parallel_,
                                                 mesh_->tp(), model_->parameter_splits());
}

void Trainer::adopt_low_rank(const std::string& low_rank) {
  const model::LowRankMap wanted = model::parse_low_rank(low_rank);
  for (const auto& [path, rank] : model::parse_low_rank(config_.model.low_rank)) {
    if (!wanted.contains(path)) {
      throw ConfigError(
          fmt::format("the checkpoint holds {} dense, and this run's model.low_rank makes it low rank ({}={}); leave "
                      "model.low_rank out to resume the checkpoint's structure",
                      path, path, rank));
    }
  }
  for (const auto& [path, rank] : wanted) {
    model_->factorize(path, rank);
  }
  config_.model.low_rank = model_->config().low_rank;
  flops_per_token_ = model::training_flops_per_token(config_.model, config_.seq_len());  // MFU counts the factors
  if (runtime_.info().rank == 0) {
    spdlog::info("[compress] the checkpoint's model is compressed: model.low_rank = {} ({} parameters)",
                 config_.model.low_rank, human_count(static_cast<double>(full_parameter_count(*model_))));
  }
  rebuild_optimizer(false);
}

CompressionReport Trainer::compress(const CompressConfig& compress) {
  const CompressionSettings settings{
      .targets = split_targets(compress.target_globs(config_.model.attention)),
      .rule = {.rank = compress.svd_rank > 0 ? compress.svd_rank : compress.rank,
               .energy = compress.energy,
               .param_ratio = compress.param_ratio},
      .mode = parse_compress_mode("compress.mode", compress.mode),
      .oversample = compress.oversample,
      .power_iters = compress.power_iters,
      .seed = mix(static_cast<uint64_t>(config_.run.seed), static_cast<uint64_t>(state_.step))};
  const launch::CollectiveWatchdog::TimeoutScope patient(watchdog_.get(), config_.parallel.startup_timeout_s);
  const CompressionReport report = compress_model(*model_, settings, mesh_->tp(), *data_parallel_);
  if (settings.mode == CompressMode::kFactorize) {
    rebuild_optimizer(true);
  }
  config_.model.low_rank = model_->config().low_rank;
  flops_per_token_ = model::training_flops_per_token(config_.model, config_.seq_len());

  const std::string dtype = resolved_dtype();
  monitoring::CompressionMetrics metrics{
      .step = state_.step,
      .mode = std::string(to_string(settings.mode)),
      .layers = {},
      .model_parameters_before = report.model_parameters_before,
      .model_parameters_after = report.model_parameters_after,
      .kv_cache_bytes_per_token = report.kv_cache_values_per_token * model::bytes_per_value(dtype),
      .seconds = report.seconds};
  for (const LayerCompression& layer : report.layers) {
    metrics.layers.push_back({.layer = layer.path,
                              .rank_before = layer.rank_before,
                              .rank = layer.rank,
                              .kept_energy = layer.kept_energy,
                              .relative_error = layer.relative_error,
                              .parameters_before = layer.parameters_before,
                              .parameters_after = layer.parameters_after,
                              .seconds = layer.seconds});
  }
  metrics_.record(metrics);
  if (runtime_.info().rank == 0) {
    for (const LayerCompression& layer : report.layers) {
      spdlog::info(
          "[compress] step {} {}: rank {} -> {} ({}) | kept energy {:.4f} | rel. error {:.4f} | params {} -> {} | "
          "{:.3f} s on dp rank {}{}",
          state_.step, layer.path, layer.rank_before == 0 ? std::string("dense") : std::to_string(layer.rank_before),
          layer.rank == 0 ? std::string("dense") : std::to_string(layer.rank), to_string(settings.mode),
          layer.kept_energy, layer.relative_error, layer.parameters_before, layer.parameters_after, layer.seconds,
          layer.owner, layer.rank == 0 ? " (kept dense: factors of the rank the rule gives would not be smaller)" : "");
    }
    spdlog::info(
        "[compress] step {}: {} projection(s) in {:.3f} s | model {} -> {} parameters | KV cache {} B/token ({})",
        state_.step, report.layers.size(), report.seconds, report.model_parameters_before,
        report.model_parameters_after, metrics.kv_cache_bytes_per_token, dtype);
    std::ofstream(fs::path(config_.run.out_dir) / "config.json") << to_json(config_).dump(2) << '\n';
  }
  return report;
}

void Trainer::load(const std::string& checkpoint) {
  resume_from(checkpoint);
}

EvalResult Trainer::evaluate_now() {
  if (!evaluator_) {
    throw ConfigError(fmt::format("{}: the dataset has no validation split (or eval.every is 0)", config_.data.dir));
  }
  return evaluator_->evaluate(*model_);
}

SaveReport Trainer::save() {
  return save_checkpoint();
}

void Trainer::resume_from(const std::string& resume) {
  const launch::CollectiveWatchdog::TimeoutScope patient(watchdog_.get(), config_.parallel.startup_timeout_s);
  if (resume.empty()) {
    if (const std::optional<fs::path> found = checkpointer_->find("auto")) {
      throw ConfigError(
          fmt::format("{} already holds checkpoints (newest {}); pass --resume auto to continue that "
                      "run, or set run.out_dir / checkpoint.dir to start another",
                      config_.checkpoint_dir().string(), found->string()));
    }
    return;
  }
  if (const std::optional<fs::path> found = checkpointer_->find(resume)) {
    const std::string stored = Checkpointer::stored_config(*found).model.low_rank;
    if (stored != config_.model.low_rank) {
      adopt_low_rank(stored);
    }
  }
  LoadReport report;
  const std::optional<TrainingState> resumed =
      checkpointer_->resume(resume, *optimizer_, config_, dataset_.identity(), &report);
  if (!resumed) {
    spdlog::info("[ckpt] no complete checkpoint in {}: starting from scratch", config_.checkpoint_dir().string());
    return;
  }
  state_ = *resumed;
  metrics_.record(monitoring::CheckpointMetrics{
      .step = state_.step, .save = false, .seconds = report.seconds, .bytes = report.bytes, .bytes_all_ranks = 0});
}

int Trainer::train(const std::string& resume) {
  const launch::StopSignals stop_signals;  // only while training: elsewhere a signal ends the process as usual
  resume_from(resume);
  if (state_.step >= config_.run.max_steps) {
    spdlog::info("the run is at step {}, and run.max_steps is {}: nothing to train (raise --run.max_steps to go on)",
                 state_.step, config_.run.max_steps);
    return 0;
  }
  loader_->seek(state_.loader_position);
  metrics_.record(monitoring::RunStartMetrics{.step = state_.step,
                                              .device = device_.str(),
                                              .dtype = resolved_dtype(),
                                              .world_size = mesh_->world_size(),
                                              .dp = mesh_->dp_size(),
                                              .tp = mesh_->tp_size()});
  const int64_t tokens_per_step =
      config_.data.batch_size * config_.seq_len() * config_.optim.grad_accum * data_parallel_->size();
  int64_t last_eval = -1;
  int64_t last_checkpoint = state_.step;
  pending_.clear();
  pending_since_ = std::chrono::steady_clock::now();
  while (state_.step < config_.run.max_steps) {
    seed_step_randomness();
    pending_.push_back(train_step_->run(
        state_.step,
        [this] {
          const auto asked = std::chrono::steady_clock::now();
          data::Batch batch = loader_->next();
          data_wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - asked).count();
          return MicroBatch{batch.x, batch.y};
        },
        [&stop_signals] { return stop_signals.received(); }));
    ++state_.step;
    state_.tokens_seen += tokens_per_step;
    state_.loader_position = loader_->position();
    const bool evaluate_now = config_.eval.every > 0 && state_.step % config_.eval.every == 0;
    const bool checkpoint_now = config_.checkpoint.every > 0 && state_.step % config_.checkpoint.every == 0;
    const bool compress_now = config_.compress.due(state_.step);
    // The host reads the device only here: at logged steps, and where it must know how the steps went.
    const bool read_now = state_.step % config_.run.log_every == 0 || state_.step == 1 ||
                          state_.step == config_.run.max_steps || evaluate_now || checkpoint_now || compress_now;
    if (!read_now) {
      continue;
    }
    const int signal = read_pending_steps();
    if (watchdog_) {  // start-up is over once a step has gone through
      watchdog_->steady();
    }
    if (compress_now) {  // before the evaluation and the checkpoint of this step, which see the compressed model
      compress(config_.compress);
    }
    if (evaluate_now) {
      evaluate();
      last_eval = state_.step;
    }
    if (checkpoint_now && bad_steps_in_a_row_ == 0) {
      save_checkpoint();
      last_checkpoint = state_.step;
    }
    pending_since_ = std::chrono::steady_clock::now();  // the next steps' time leaves evaluation and saving out
    if (signal != 0) {
      // After a skipped (non-finite) step the newest checkpoint stays the last good one, as at the end of a run.
      if (last_checkpoint != state_.step && bad_steps_in_a_row_ == 0) {
        save_checkpoint();
        last_checkpoint = state_.step;
      }
      spdlog::warn("{}: stopped at step {} of {}, {}; --resume auto continues the run", launch::signal_name(signal),
                   state_.step, config_.run.max_steps,
                   last_checkpoint == state_.step ? "with a checkpoint of this step" : "after a skipped step");
      return signal;
    }
  }
  if (config_.eval.every > 0 && last_eval != state_.step) {
    evaluate();
  }
  if (last_checkpoint != state_.step && bad_steps_in_a_row_ == 0) {
    save_checkpoint();
  }
  return 0;
}

// Dropout's random numbers for step `state_.step` on data-parallel rank r come from generators seeded with
// (run.seed, r, step): the ranks draw different masks (one seed everywhere would give every rank the same ones), and
// a resumed run draws what an uninterrupted run on that many ranks would, without per-rank generator states. The
// default generators are the same on every rank of a tensor-parallel group (the activations all of them hold whole
// get the same masks, so the replicas stay equal); the group's sharded generators, which draw for the activations
// split over the group, are seeded with (run.seed, r, tensor-parallel rank, step), a different seed on every rank.
void Trainer::seed_step_randomness() {
  const uint64_t replica = mix(static_cast<uint64_t>(config_.run.seed), static_cast<uint64_t>(data_parallel_->rank()));
  at::manual_seed(mix(replica, static_cast<uint64_t>(state_.step)));
  tensor_parallel_->seed_sharded(
      mix(mix(replica, static_cast<uint64_t>(tensor_parallel_->rank())), static_cast<uint64_t>(state_.step)));
}

int Trainer::read_pending_steps() {
  const std::vector<StepResult> results = read_step_reports(pending_);
  const auto now = std::chrono::steady_clock::now();
  // The host does not wait for each step, so a step's own time is not known: each gets the mean since the last read.
  const double seconds = std::chrono::duration<double>(now - pending_since_).count() /
                         static_cast<double>(std::max<size_t>(1, results.size()));
  const int64_t first_step = state_.step - static_cast<int64_t>(results.size()) + 1;
  int signal = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    const StepResult& result = results[i];
    const int64_t step = first_step + static_cast<int64_t>(i);
    if (!result.finite) {
      ++skipped_steps_;
      spdlog::warn("step {}: non-finite loss ({}) or gradient norm ({}); update skipped", step, result.loss,
                   result.grad_norm);
      if (++bad_steps_in_a_row_ >= config_.run.max_bad_steps) {
        throw Error(
            fmt::format("{} steps in a row had a non-finite loss or gradient (run.max_bad_steps = {}); "
                        "stopping at step {}. The last good checkpoint is the newest in {}",
                        bad_steps_in_a_row_, config_.run.max_bad_steps, step, config_.checkpoint_dir().string()));
      }
    } else {
      bad_steps_in_a_row_ = 0;
    }
    log_step(step, result, seconds);
    signal = std::max(signal, result.stop_signal);
  }
  pending_.clear();
  pending_since_ = now;
  if (exporter_) {  // only Prometheus keeps them (metrics.jsonl is rank 0's)
    record_runtime_metrics();
  }
  return signal;
}

std::string Trainer::resolved_dtype() const {
  return config_.run.dtype == "auto" ? (device_.is_cuda() ? "bfloat16" : "float32") : config_.run.dtype;
}

void Trainer::record_runtime_metrics() {
  monitoring::RuntimeMetrics metrics{.data_wait_seconds_total = data_wait_seconds_};
  for (const launch::CollectiveMeter::Row& row : collective_meter_.rows()) {
    metrics.collectives.push_back({.group = row.group,
                                   .op = launch::to_string(row.kind),
                                   .count = row.totals.count,
                                   .bytes = row.totals.bytes,
                                   .seconds = row.totals.seconds});
  }
  const monitoring::DeviceMemory memory = monitoring::device_memory(device_);
  metrics.memory_allocated_bytes = memory.allocated_bytes;
  metrics.memory_reserved_bytes = memory.reserved_bytes;
  metrics.memory_peak_bytes = memory.peak_bytes;
  metrics.model_parameters = full_parameter_count(*model_);
  metrics_.record(metrics);
}

void Trainer::start_metrics_exporter() {
  const launch::ProcessInfo& process = runtime_.info();
  const std::string address =
      monitoring::rank_bind_address(config_.monitoring.metrics_address, process.local_rank, process.host);
  exporter_ = std::make_unique<monitoring::PrometheusExporter>(address);
  const std::string bound_host = address.substr(0, address.rfind(':'));
  spdlog::info("metrics: serving Prometheus metrics at http://{}:{}/metrics", bound_host, exporter_->port());
  metrics_.add(std::make_unique<monitoring::PrometheusSink>(exporter_->registry(),
                                                            monitoring::MetricsIdentity{.job = config_.monitoring.job,
                                                                                        .rank = process.rank,
                                                                                        .dp_rank = mesh_->dp_rank(),
                                                                                        .tp_rank = mesh_->tp_rank(),
                                                                                        .device = device_.str(),
                                                                                        .build = build_labels()}));
  record_runtime_metrics();  // memory and parameters are known now: no 0 before the first step is read

  // Where Prometheus finds this rank: the address it bound, or this node's name when it serves every interface.
  const std::string target =
      fmt::format("{}:{}", bound_host == "0.0.0.0" ? process.host : bound_host, exporter_->port());
  const std::vector<RankTarget> targets = gather_targets(
      RankTarget{.target = target, .local_rank = process.local_rank, .node = process.host}, *mesh_, device_);
  if (process.rank == 0) {
    const fs::path file = config_.monitoring.targets_file.empty()
                              ? fs::path(config_.run.out_dir) / "prometheus-targets.json"
                              : fs::path(config_.monitoring.targets_file);
    write_targets_file(file, targets);
    spdlog::info("metrics: wrote the Prometheus targets of {} rank(s) to {} (job {})", targets.size(), file.string(),
                 config_.monitoring.job);
  }
}

void Trainer::log_step(int64_t step, const StepResult& result, double seconds) {
  const int64_t tokens =
      config_.data.batch_size * config_.seq_len() * config_.optim.grad_accum * data_parallel_->size();
  monitoring::StepMetrics metrics{.step = step,
                                  .loss = result.loss,
                                  .learning_rate = result.learning_rate,
                                  .grad_norm = result.grad_norm,
                                  .step_seconds = seconds,
                                  .tokens = tokens,
                                  .tokens_per_second = static_cast<double>(tokens) / seconds,
                                  .skipped_steps_total = skipped_steps_,
                                  .rank_tokens = tokens / data_parallel_->size()};
  if (peak_flops_ > 0) {
    metrics.mfu = flops_per_token_ * metrics.tokens_per_second / (peak_flops_ * mesh_->world_size());
  }
  metrics_.record(metrics);
  if (runtime_.info().rank == 0 && (step % config_.run.log_every == 0 || step == 1)) {
    spdlog::info("step {:>6}/{} | loss {:.4f} | lr {:.2e} | grad {:.3f} | {:.0f} ms | {} tok/s{}", step,
                 config_.run.max_steps, result.loss, result.learning_rate, result.grad_norm, seconds * 1e3,
                 human_count(metrics.tokens_per_second),
                 metrics.mfu ? fmt::format(" | mfu {:.1f}%", *metrics.mfu * 100) : std::string());
  }
}

void Trainer::evaluate() {
  if (!evaluator_) {
    return;
  }
  last_eval_ = evaluator_->evaluate(*model_);
  metrics_.record(
      monitoring::EvalMetrics{.step = state_.step, .loss = last_eval_.loss, .perplexity = last_eval_.perplexity});
  if (runtime_.info().rank == 0) {
    spdlog::info("eval step {} | val loss {:.4f} | val ppl {:.2f} | {} tokens", state_.step, last_eval_.loss,
                 last_eval_.perplexity, last_eval_.tokens);
    if (config_.eval.sample_tokens > 0) {  // only without tensor parallelism (TrainConfig::resolve)
      spdlog::info("sample: {}",
                   sample_text(*model_, *dataset_.tokenizer, config_.eval.sample_prompt, config_.eval.sample_tokens));
    }
  }
}

SaveReport Trainer::save_checkpoint() {
  // Ranks write their files at their own pace, and the fastest wait for the slowest in the agreement that follows.
  const launch::CollectiveWatchdog::TimeoutScope patient(watchdog_.get(), config_.parallel.startup_timeout_s);
  const SaveReport report = checkpointer_->save(state_, *optimizer_, config_, dataset_.identity());
  metrics_.record(monitoring::CheckpointMetrics{.step = state_.step,
                                                .save = true,
                                                .seconds = report.seconds,
                                                .bytes = report.bytes,
                                                .bytes_all_ranks = report.bytes_all_ranks});
  return report;
}

}  // namespace mlagpt::trainer
