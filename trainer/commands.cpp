#include "trainer/commands.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "launch/error.h"
#include "model/accounting.h"
#include "model/generation.h"
#include "trainer/checkpointer.h"
#include "trainer/compression/convert.h"
#include "trainer/evaluator.h"
#include "trainer/optimizer.h"
#include "trainer/trainer.h"

namespace mlagpt::trainer {
namespace {

namespace fs = std::filesystem;

// A step directory as given (load_weights verifies it), or the newest complete step of a checkpoint directory whose
// weights verify, as `--resume auto` picks it: a damaged one is skipped with a warning naming it and why.
fs::path resolve_checkpoint(const fs::path& path) {
  if (Checkpointer::is_complete(path)) {
    return path;
  }
  if (!fs::is_directory(path)) {
    throw IoError(fmt::format("--ckpt {}: no such checkpoint", path.string()));
  }
  launch::LocalCommunicator local;
  const std::vector<fs::path> found = Checkpointer(path, 1, local).candidates();
  if (found.empty()) {
    throw IoError(fmt::format("--ckpt {}: holds no complete checkpoint", path.string()));
  }
  std::vector<std::string> failures;
  for (const fs::path& checkpoint : found) {
    try {
      Checkpointer::verify_weights(checkpoint);
      return checkpoint;
    } catch (const IoError& e) {
      failures.emplace_back(e.what());
    } catch (const DataError& e) {
      failures.emplace_back(e.what());
    }
    spdlog::warn("[ckpt] --ckpt {} skips {}: {}", path.string(), checkpoint.string(), failures.back());
  }
  throw IoError(fmt::format("--ckpt {}: none of its {} complete checkpoints can be loaded: {}", path.string(),
                            failures.size(), fmt::join(failures, " | ")));
}

struct LoadedModel {
  TrainConfig config;
  std::shared_ptr<model::Gpt> model;
  Dataset dataset;
  c10::Device device = c10::Device(c10::kCPU);
};

LoadedModel load_model(const fs::path& checkpoint_arg, const std::string& data_dir, const std::string& device,
                       const launch::Runtime& runtime) {
  const fs::path checkpoint = resolve_checkpoint(checkpoint_arg);
  LoadedModel loaded;
  loaded.config = Checkpointer::stored_config(checkpoint);
  loaded.config.run.device = device;
  loaded.config.resolve();
  loaded.dataset = open_dataset(data_dir.empty() ? loaded.config.data.dir : data_dir, loaded.config.model);
  loaded.device = select_device(loaded.config.run, runtime.info());
  loaded.model = std::make_shared<model::Gpt>(loaded.config.model);
  Checkpointer::load_weights(checkpoint, *loaded.model);
  loaded.model->to(loaded.device);
  loaded.model->eval();
  return loaded;
}

// The validation loss of `model` on the loaded checkpoint's dataset, its batch size and sequence length, over the
// first `batches` batches (0: the whole split) on every rank of the world.
EvalResult evaluate_loaded(const LoadedModel& loaded, model::Gpt& model, int64_t batches,
                           const launch::Runtime& runtime) {
  if (loaded.dataset.manifest.val.shards.empty()) {
    throw DataError(fmt::format("{}: the dataset has no validation split", loaded.dataset.dir.string()));
  }
  const std::unique_ptr<launch::Communicator> comm = runtime.world_cpu_communicator();
  data::LoaderConfig validation{.shards = loaded.dataset.val_shards(),
                                .batch_size = loaded.config.data.batch_size,
                                .seq_len = loaded.config.seq_len(),
                                .rank = runtime.info().rank,
                                .world_size = runtime.info().world_size,
                                .device = loaded.device};
  Evaluator evaluator(std::move(validation), batches, *comm);
  return evaluator.evaluate(model);
}

// Refuses an output directory that already holds checkpoints.
void require_new_checkpoint_dir(const fs::path& out) {
  if (out.empty()) {
    throw ConfigError("--out: name the directory for the new checkpoint");
  }
  launch::LocalCommunicator local;
  if (!Checkpointer(out, 1, local).candidates().empty()) {
    throw ConfigError(fmt::format("--out {} already holds checkpoints; name a new directory", out.string()));
  }
}

// The length of the longest prefix of `text` that does not end inside a UTF-8 character.
size_t complete_utf8_prefix(const std::string& text) {
  size_t start = text.size();
  while (start > 0 && (static_cast<unsigned char>(text[start - 1]) & 0xC0) == 0x80 && text.size() - start < 3) {
    --start;  // back over continuation bytes to the last character's first byte
  }
  if (start == 0) {
    return text.size();
  }
  const auto lead = static_cast<unsigned char>(text[start - 1]);
  const size_t length = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
  return text.size() - (start - 1) >= length ? text.size() : start - 1;
}

}  // namespace

int run_train(const TrainOptions& options, const launch::Runtime& runtime) {
  Trainer trainer(read_train_config(options.config, options.overrides), runtime);
  const int signal = trainer.train(options.resume);
  return signal == 0 ? 0 : 128 + signal;
}

void run_compress(const CompressOptions& options, const launch::Runtime& runtime, std::ostream& out) {
  const fs::path checkpoint = resolve_checkpoint(options.checkpoint);
  require_new_checkpoint_dir(options.out);
  TrainConfig config = Checkpointer::stored_config(checkpoint);
  if (!options.data_dir.empty()) {
    config.data.dir = options.data_dir;
  }
  config.run.device = options.device;
  config.run.out_dir = options.out.string();
  config.checkpoint.dir = options.out.string();
  config.parallel.tp = 1;  // the whole model on every rank; ranks share out the layers
  config.eval.every = std::max<int64_t>(config.eval.every, 1);
  config.eval.sample_tokens = 0;
  if (options.batches > 0) {
    config.eval.batches = options.batches;
  }
  CompressConfig compress{.every = 1,
                          .targets = options.targets,
                          .rank = options.rank,
                          .energy = options.energy,
                          .param_ratio = options.param_ratio,
                          .mode = options.mode};
  TrainConfig checked = config;  // validates the options as a [compress] section; the checkpoint keeps its own
  checked.compress = compress;
  try {
    checked.resolve();
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("mlagpt compress: {}", e.what()));
  }
  config.resolve();
  Trainer trainer(config, runtime);
  trainer.load(checkpoint.string());
  const EvalResult before = trainer.evaluate_now();
  const CompressionReport report = trainer.compress(compress);
  const EvalResult after = trainer.evaluate_now();
  const SaveReport saved = trainer.save();
  if (runtime.info().rank == 0) {
    const int64_t kv = report.kv_cache_values_per_token;
    out << fmt::format(
        "compressed {} projection(s) of {} ({})\n"
        "val loss {:.4f} -> {:.4f} (perplexity {:.2f} -> {:.2f}, {} tokens)\n"
        "parameters {} -> {} ({:.1f}%)\n"
        "KV cache {} values per token before and after (compression changes weights, not the cached activations)\n"
        "wrote {}\n",
        report.layers.size(), checkpoint.string(), options.mode, before.loss, after.loss, before.perplexity,
        after.perplexity, after.tokens, report.model_parameters_before, report.model_parameters_after,
        100.0 * static_cast<double>(report.model_parameters_after) /
            static_cast<double>(report.model_parameters_before),
        kv, saved.path.string());
  }
}

void run_convert(const ConvertOptions& options, const launch::Runtime& runtime, std::ostream& out) {
  if (runtime.info().world_size > 1) {
    throw ConfigError(fmt::format("convert runs as one process; run it without mpirun (world size here: {})",
                                  runtime.info().world_size));
  }
  require_new_checkpoint_dir(options.out);
  const fs::path checkpoint = resolve_checkpoint(options.checkpoint);
  LoadedModel loaded = load_model(checkpoint, options.data_dir, options.device, runtime);
  const model::ModelConfig mla = mla_config_for(loaded.config.model, options.kv_lora_rank, options.rope_dim);
  const int64_t batches = options.batches > 0 ? options.batches : loaded.config.eval.batches;
  const EvalResult before = evaluate_loaded(loaded, *loaded.model, batches, runtime);
  auto converted = std::make_shared<model::Gpt>(mla);
  converted->to(loaded.device);
  const std::vector<LayerConversion> layers = convert_to_mla(*loaded.model, *converted);
  converted->eval();
  const EvalResult after = evaluate_loaded(loaded, *converted, batches, runtime);

  // Step 0 of a new run: the MLA model, a fresh optimizer; the source run's other settings.
  TrainConfig config = loaded.config;
  config.model = mla;
  config.run.out_dir = options.out.string();
  config.checkpoint.dir = options.out.string();
  config.compress = CompressConfig{};  // its targets may name projections MLA does not have
  config.resolve();
  converted->train();
  launch::LocalCommunicator local;
  FlatAdamW optimizer(adamw_parameters(*converted), adamw_settings(config.optim), FlatOptions{}, local);
  const SaveReport saved =
      Checkpointer(options.out, 1, local).save(TrainingState{}, optimizer, config, loaded.dataset.identity());
  double worst_kept = 1;
  for (const LayerConversion& layer : layers) {
    worst_kept = std::min(worst_kept, layer.kept_energy);
  }
  out << fmt::format(
      "converted {} ({}, {} layers) to MLA: kv_lora_rank {}, qk_rope_head_dim {}, qk_nope_head_dim {}, v_head_dim {}\n"
      "joint key/value factorization: kept energy {:.4f} in the worst layer\n"
      "val loss {:.4f} -> {:.4f} (perplexity {:.2f} -> {:.2f}, {} tokens)\n"
      "parameters {} -> {}\n"
      "KV cache {} -> {} values per token\n"
      "wrote {}\n"
      "fine-tune it with: mlagpt train --config <the run's config> --resume {} --model.attention=mla "
      "--model.n_kv_head=0 --model.q_lora_rank=0 --model.kv_lora_rank={} --model.qk_nope_head_dim={} "
      "--model.qk_rope_head_dim={} --model.v_head_dim={} --model.kv_norm=false\n",
      loaded.config.model.attention == model::AttentionKind::kMha   ? "MHA"
      : loaded.config.model.attention == model::AttentionKind::kGqa ? "GQA"
                                                                    : "MQA",
      checkpoint.string(), mla.n_layer, mla.kv_lora_rank, mla.qk_rope_head_dim, mla.qk_nope_head_dim, mla.v_head_dim,
      worst_kept, before.loss, after.loss, before.perplexity, after.perplexity, after.tokens,
      model::count_parameters(loaded.config.model).total, model::count_parameters(mla).total,
      model::kv_cache_values_per_token(loaded.config.model), model::kv_cache_values_per_token(mla), saved.path.string(),
      saved.path.string(), mla.kv_lora_rank, mla.qk_nope_head_dim, mla.qk_rope_head_dim, mla.v_head_dim);
}

void run_eval(const EvalOptions& options, const launch::Runtime& runtime, std::ostream& out) {
  if (options.batches < 0) {
    throw ConfigError(fmt::format("--batches must be >= 0 (0 = the whole validation split), got {}", options.batches));
  }
  LoadedModel loaded = load_model(options.checkpoint, options.data_dir, options.device, runtime);
  const EvalResult result = evaluate_loaded(loaded, *loaded.model, options.batches, runtime);
  if (runtime.info().rank == 0) {
    out << fmt::format("val loss {:.4f} | val perplexity {:.2f} | {} tokens\n", result.loss, result.perplexity,
                       result.tokens);
  }
}

void run_sample(const SampleOptions& options, const launch::Runtime& runtime, std::ostream& out) {
  LoadedModel loaded = load_model(options.checkpoint, options.data_dir, options.device, runtime);
  const data::Tokenizer& tokenizer = *loaded.dataset.tokenizer;
  std::vector<int64_t> prompt;
  for (const int32_t id : tokenizer.encode(options.prompt)) {
    prompt.push_back(id);
  }
  if (prompt.empty()) {
    prompt.push_back(tokenizer.eot_id());  // an empty prompt starts a new document
  }
  model::SamplingConfig sampling{.max_new_tokens = options.max_new_tokens,
                                 .temperature = options.temperature,
                                 .top_k = options.top_k,
                                 .top_p = options.top_p,
                                 .seed = options.seed,
                                 .vocab_size = tokenizer.vocab_size(),  // never a padding id of the model's
                                 .stop_token = tokenizer.eot_id(),
                                 .mla_mode = options.mode};
  // The prompt is printed with the first token, so that a refused prompt or option prints nothing. Then decode the
  // growing sequence and print what is new: a multi-byte character or a BPE piece may only become text once its
  // last token has arrived.
  bool started = false;
  const auto start = [&] {
    if (!started) {
      out << options.prompt << std::flush;
      started = true;
    }
  };
  std::vector<int32_t> generated;
  size_t printed = 0;
  model::generate(*loaded.model, prompt, sampling, [&](int64_t token) {
    start();
    if (token == tokenizer.eot_id()) {
      return;
    }
    generated.push_back(static_cast<int32_t>(token));
    const std::string text = tokenizer.decode(generated);
    const size_t complete = complete_utf8_prefix(text);
    if (complete > printed) {
      out << text.substr(printed, complete - printed) << std::flush;
      printed = complete;
    }
  });
  start();  // max_new_tokens = 0
  const std::string text = tokenizer.decode(generated);
  out << text.substr(std::min(printed, text.size())) << '\n' << std::flush;
}

}  // namespace mlagpt::trainer
