#include "trainer/cli.h"

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <cstdlib>
#include <iostream>

#include "data/prepare.h"
#include "launch/error.h"
#include "launch/runtime.h"
#include "trainer/commands.h"
#include "trainer/model_info.h"
#include "trainer/report.h"
#include "trainer/version_report.h"

namespace mlagpt::trainer {

int run_cli(int argc, char** argv, const launch::Runtime& runtime) {
  CLI::App app{"mlagpt: train GPT models with Multi-head Latent Attention on CPUs and GPUs", "mlagpt"};
  app.set_version_flag(
      "--version", [] { return version_report(); }, "Print the versions built with and run with");
  app.require_subcommand(1);

  CLI::App* version = app.add_subcommand("version", "Print the versions built with and run with");
  version->callback([&runtime] {
    if (runtime.info().rank == 0) {
      std::cout << version_report() << std::flush;
    }
  });

  CLI::App* model_info =
      app.add_subcommand("model-info", "Print parameter counts, KV-cache size and training FLOPs of a model config");
  std::string config_file;
  int64_t context = 0;
  std::string dtype = "bfloat16";
  model_info->add_option("--config", config_file, "TOML file with a [model] table")->required();
  model_info->add_option("--context", context, "Context length in tokens (default: the config's block_size)")
      ->check(CLI::PositiveNumber);
  model_info->add_option("--dtype", dtype, "KV-cache dtype")
      ->check(CLI::IsMember({"bfloat16", "float16", "float32"}))
      ->capture_default_str();
  model_info->callback([&] {
    const std::string report = model_info_report(config_file, context, dtype);
    if (runtime.info().rank == 0) {
      std::cout << report << std::flush;
    }
  });

  CLI::App* prepare = app.add_subcommand(
      "prepare", "Tokenize text files into HDF5 token shards, a tokenizer model and dataset.json (see data/prepare.h)");
  data::PrepareConfig prepare_config;
  std::string out_dir;
  prepare->add_option("--input", prepare_config.inputs,
                      "Files, directories (read recursively) or globs of plain text, or .jsonl with a \"text\" field; "
                      "default: the fortune files of Debian's fortunes package");
  prepare->add_option("--tokenizer", prepare_config.tokenizer, "byte, char or bpe")->required();
  prepare->add_option("--vocab-size", prepare_config.vocab_size,
                      "Vocabulary size of the bpe tokenizer (required for bpe)");
  prepare->add_option("--out", out_dir, "Directory to write the dataset into")->required();
  prepare->add_option("--shard-tokens", prepare_config.shard_tokens, "Tokens per shard")->capture_default_str();
  prepare->add_option("--val-fraction", prepare_config.val_fraction, "Expected fraction of documents in val")
      ->capture_default_str();
  prepare->add_option("--seed", prepare_config.seed, "Seed of the train/val split")->capture_default_str();
  prepare->add_option("--threads", prepare_config.threads, "Tokenizing threads (default: all cores)");
  prepare->add_flag("--split-on-percent", prepare_config.split_on_percent,
                    "Plain-text inputs are fortune files: lines holding just \"%\" separate documents (always on for "
                    "the default corpus)");
  prepare->add_flag("--force", prepare_config.force, "Replace a different dataset already in --out");
  prepare->callback([&] {
    if (runtime.info().world_size > 1) {
      throw ConfigError(
          fmt::format("prepare runs as one process (it uses every core itself); run it without "
                      "mpirun (world size here: {})",
                      runtime.info().world_size));
    }
    prepare_config.out = out_dir;
    // The summary and throughput go to the log; stdout gets the manifest's path, for scripts.
    std::cout << data::prepare_dataset(prepare_config).manifest_path.string() << "\n" << std::flush;
  });

  CLI::App* train = app.add_subcommand("train", "Train a model: mlagpt train --config FILE [--section.key=value ...]");
  TrainOptions train_options;
  train->add_option("--config", train_options.config, "TOML file with [run], [model], [data], [optim], ... tables");
  train->add_option("--resume", train_options.resume,
                    "'auto' (the newest checkpoint that verifies, or a fresh start when there is none) or a checkpoint "
                    "directory");
  // Everything else is an override of one config field: --optim.lr=3e-4 or --optim.lr 3e-4.
  train->allow_extras();
  int exit_code = 0;
  train->callback([&] {
    train_options.overrides = train->remaining();
    exit_code = run_train(train_options, runtime);
  });

  CLI::App* eval = app.add_subcommand("eval", "Validation loss and perplexity of a checkpoint");
  EvalOptions eval_options;
  eval->add_option("--ckpt", eval_options.checkpoint, "A checkpoint step directory, or a checkpoint directory")
      ->required();
  eval->add_option("--data", eval_options.data_dir, "Dataset directory (default: the one trained on)");
  eval->add_option("--batches", eval_options.batches, "Validation batches (default: the whole split)");
  eval->add_option("--device", eval_options.device, "auto, cpu or cuda")->capture_default_str();
  eval->callback([&] { run_eval(eval_options, runtime, std::cout); });

  CLI::App* sample = app.add_subcommand("sample", "Generate text from a checkpoint, streamed as it is produced");
  SampleOptions sample_options;
  std::string mode = "absorbed";
  sample->add_option("--ckpt", sample_options.checkpoint, "A checkpoint step directory, or a checkpoint directory")
      ->required();
  sample->add_option("--data", sample_options.data_dir, "Dataset directory with the tokenizer (default: trained on)");
  sample->add_option("--prompt", sample_options.prompt, "Text to continue (default: a new document)");
  sample->add_option("--max-new-tokens", sample_options.max_new_tokens)->capture_default_str();
  sample->add_option("--temperature", sample_options.temperature, "0 = greedy")->capture_default_str();
  sample->add_option("--top-k", sample_options.top_k, "0 = off")->capture_default_str();
  sample->add_option("--top-p", sample_options.top_p, "1 = off")->capture_default_str();
  sample->add_option("--seed", sample_options.seed)->capture_default_str();
  sample->add_option("--mla-mode", mode, "MLA decoding: absorbed or naive")
      ->check(CLI::IsMember({"absorbed", "naive"}))
      ->capture_default_str();
  sample->add_option("--device", sample_options.device, "auto, cpu or cuda")->capture_default_str();
  sample->callback([&] {
    sample_options.mode = mode == "naive" ? model::MlaDecodeMode::kNaive : model::MlaDecodeMode::kAbsorbed;
    if (runtime.info().rank == 0) {
      run_sample(sample_options, runtime, std::cout);
    }
  });

  CLI::App* compress = app.add_subcommand(
      "compress", "Compress a checkpoint's projections by the randomized SVD into a new checkpoint (train resumes it)");
  CompressOptions compress_options;
  compress->add_option("--ckpt", compress_options.checkpoint, "A checkpoint step directory, or a checkpoint directory")
      ->required();
  compress->add_option("--out", compress_options.out, "New checkpoint directory to write")->required();
  compress
      ->add_option("--targets", compress_options.targets,
                   "Projection-path globs, comma-separated (blocks.*.mlp.*,blocks.*.attn.kv_up)")
      ->capture_default_str();
  compress->add_option("--rank", compress_options.rank, "Keep this rank");
  compress->add_option("--energy", compress_options.energy,
                       "Keep the smallest rank holding this share of the squared singular values");
  compress->add_option("--param-ratio", compress_options.param_ratio,
                       "Keep the rank whose factors hold this share of the layer's weights");
  compress->add_option("--mode", compress_options.mode, "factorize (W -> B A) or project (W -> rank-k W, dense)")
      ->check(CLI::IsMember({"factorize", "project"}))
      ->capture_default_str();
  compress->add_option("--batches", compress_options.batches,
                       "Validation batches for the losses before and after (default: the run's eval.batches)");
  compress->add_option("--data", compress_options.data_dir, "Dataset directory (default: the one trained on)");
  compress->add_option("--device", compress_options.device, "auto, cpu or cuda")->capture_default_str();
  compress->callback([&] { run_compress(compress_options, runtime, std::cout); });

  CLI::App* convert = app.add_subcommand(
      "convert", "Convert an MHA, GQA or MQA checkpoint into MLA (joint low-rank key/value factorization)");
  ConvertOptions convert_options;
  bool to_mla = false;
  convert->add_flag("--to-mla", to_mla, "Convert into Multi-head Latent Attention (the one conversion there is)")
      ->required();
  convert->add_option("--ckpt", convert_options.checkpoint, "A checkpoint step directory, or a checkpoint directory")
      ->required();
  convert->add_option("--out", convert_options.out, "New checkpoint directory to write")->required();
  convert->add_option("--kv-lora-rank", convert_options.kv_lora_rank, "Width of the KV latent (Dc)")->required();
  convert->add_option("--rope-dim", convert_options.rope_dim,
                      "Rotated dimensions per head kept as MLA's shared RoPE key (default: head width / 4 with RoPE)");
  convert->add_option("--batches", convert_options.batches,
                      "Validation batches for the losses before and after (default: the run's eval.batches)");
  convert->add_option("--data", convert_options.data_dir, "Dataset directory (default: the one trained on)");
  convert->add_option("--device", convert_options.device, "auto, cpu or cuda")->capture_default_str();
  convert->callback([&] { run_convert(convert_options, runtime, std::cout); });

  CLI::App* report = app.add_subcommand(
      "report", "Plots (loss, tokens/s) and a Markdown table (parameters, KV cache, val loss, speed) comparing runs");
  ReportOptions report_options;
  report
      ->add_option("runs", report_options.runs,
                   "Run directories (run.out_dir), each with metrics.jsonl and config.json")
      ->required();
  report
      ->add_option("--out", report_options.out,
                   "Directory for report.md, loss.png, tokens_per_second.png and the gnuplot data and script")
      ->required();
  report->callback([&] {
    if (runtime.info().world_size > 1) {
      throw ConfigError(fmt::format("report runs as one process; run it without mpirun (world size here: {})",
                                    runtime.info().world_size));
    }
    if (const char* gnuplot = std::getenv("MLAGPT_GNUPLOT"); gnuplot != nullptr && *gnuplot != '\0') {
      report_options.gnuplot = gnuplot;
    }
    // The log says what was written; stdout gets report.md's path, for scripts.
    std::cout << write_report(report_options).markdown.string() << "\n" << std::flush;
  });

  // CLI11 reports a mistyped command as "A subcommand is required"; name it instead.
  std::string known;
  bool is_known = false;
  for (const CLI::App* command : app.get_subcommands({})) {
    known += (known.empty() ? "" : ", ") + command->get_name();
    is_known = is_known || (argc > 1 && command->get_name() == argv[1]);
  }
  if (argc > 1 && argv[1][0] != '-' && !is_known) {
    std::cerr << "mlagpt: unknown command '" << argv[1] << "' (commands: " << known << "; see mlagpt --help)\n";
    return static_cast<int>(CLI::ExitCodes::ExtrasError);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}

}  // namespace mlagpt::trainer
