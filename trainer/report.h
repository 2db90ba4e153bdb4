// `mlagpt report RUN_DIR... --out DIR`: the comparison of training runs that the MLA experiment repositories draw for
// MHA, MQA, GQA and MLA, from what each run left in its run.out_dir (docs/design.md, "Metrics", "Reports"):
//
//   RUN_DIR/metrics.jsonl   train and eval records (JsonlSink); other kinds are skipped
//   RUN_DIR/config.json     the resolved TrainConfig, for the model's parameters and KV cache (model/accounting.h)
//
// It writes into DIR (created when missing), every file to a temporary name and then renamed:
//
//   DIR/<label>.train.dat   step, tokens trained, loss, tokens/s of each step       (gnuplot's whitespace columns)
//   DIR/<label>.eval.dat    step, tokens trained, val loss, val perplexity of each evaluation (runs that have some)
//   DIR/plots.gp            the gnuplot script: `cd DIR && gnuplot plots.gp` renders the two plots again
//   DIR/loss.png            training loss (lines) and validation loss (points) against tokens trained, one color a run
//   DIR/tokens_per_second.png   tokens/s against tokens trained, one line a run
//   DIR/report.md           one table row a run, the definitions of its columns, and the two plots
//
// A run's label is the last component of its directory. A resumed run appends to its metrics.jsonl and logs again
// from its checkpoint's step: a train record of step s replaces every record before it (train or eval) of step s or
// later, so what a stopped run logged past its last checkpoint gives way to what the resumed run logged.
//
// The plots are drawn by gnuplot (pngcairo), run as a child process without a shell; nothing here draws pixels. All
// inputs are read and checked before DIR is touched, so a bad run directory writes nothing; a gnuplot that is missing
// or fails leaves the data files and script (complete) but no plot and no report.md. One thread, no device.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "trainer/train_config.h"

namespace mlagpt::trainer {

// The plots' size in pixels.
constexpr int kReportPlotWidth = 1000;
constexpr int kReportPlotHeight = 600;

struct TrainRecord {
  int64_t step = 0;
  double loss = 0;  // NaN for a skipped (non-finite) step
  double step_seconds = 0;
  int64_t tokens = 0;  // of this step, all ranks
  double tokens_per_second = 0;
  double time = 0;             // Unix seconds when it was written
  int64_t tokens_trained = 0;  // the sum of `tokens` over this run's steps up to and including this one
};

struct EvalRecord {
  int64_t step = 0;
  double val_loss = 0;
  double val_perplexity = 0;
  double time = 0;
  int64_t tokens_trained = 0;  // that of the train record of the same step (or the last one before it)
};

// A run's metrics.jsonl after the resume rule above: ascending steps, one record each.
struct RunMetrics {
  std::vector<TrainRecord> train;
  std::vector<EvalRecord> eval;
  double last_time = 0;  // of the file's last record of any kind
  std::string dtype;     // of the last start record (what run.dtype resolved to); "" in files from before them
};

// Throws IoError naming the file when it is missing or a line is not JSON (with the line's number), DataError naming
// the file, line and field when a train or eval record lacks a field or has the wrong type, and DataError when the
// file has no train record.
RunMetrics read_run_metrics(const std::filesystem::path& file);

// One row of the table.
struct RunSummary {
  std::string label;
  std::filesystem::path dir;
  TrainConfig config;
  RunMetrics metrics;
  int64_t parameters = 0;                // count_parameters(config.model).total
  std::string kv_dtype;                  // the run's dtype: run.dtype, or what "auto" resolves to
  bool kv_dtype_assumed = false;         // run.dtype and run.device are both "auto": bfloat16, as on a GPU
  int64_t kv_cache_bytes_per_token = 0;  // kv_cache_values_per_token x bytes per value of kv_dtype
  int64_t steps = 0;                     // train records (one per optimizer step)
  int64_t tokens = 0;                    // tokens trained, all ranks
  std::optional<EvalRecord> final_eval;  // the last evaluation
  double tokens_per_second = 0;          // median over the train records but the first (its step holds warm-up)
  double wall_seconds = 0;               // last record's time - (first train record's time - its step_seconds)
};

// Reads RUN_DIR/metrics.jsonl and RUN_DIR/config.json (train_config_from_json: a ConfigError names the file).
RunSummary summarize_run(const std::filesystem::path& run_dir);

struct ReportOptions {
  std::vector<std::string> runs;    // run directories
  std::filesystem::path out;        // DIR
  std::string gnuplot = "gnuplot";  // the program: a name looked up on PATH, or a path
};

struct ReportFiles {
  std::filesystem::path markdown;
  std::filesystem::path loss_plot;
  std::filesystem::path tokens_per_second_plot;
};

// Summarizes every run (two runs with the same label are a ConfigError naming both directories), writes the data
// files and the script, runs gnuplot in DIR, and writes report.md. A gnuplot that cannot be started is an Error
// naming the program; one that fails, an Error with its exit status and standard error.
ReportFiles write_report(const ReportOptions& options);

}  // namespace mlagpt::trainer
