#include "trainer/report.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <string_view>

#include "data/file_io.h"
#include "launch/error.h"
#include "model/accounting.h"

extern char** environ;

namespace mlagpt::trainer {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A record's field, checked: `where` is "FILE:LINE", `kind` the record's kind.
const json& field(const json& record, const char* key, std::string_view kind, const std::string& where) {
  const auto found = record.find(key);
  if (found == record.end()) {
    throw DataError(fmt::format("{}: {} record without \"{}\"", where, kind, key));
  }
  return *found;
}

int64_t integer_field(const json& record, const char* key, std::string_view kind, const std::string& where) {
  const json& value = field(record, key, kind, where);
  if (!value.is_number_integer()) {
    throw DataError(fmt::format("{}: {} record's \"{}\" is {}, not an integer", where, kind, key, value.dump()));
  }
  return value.get<int64_t>();
}

// JsonlSink writes a non-finite number (the loss of a skipped step) as null: it reads back as NaN.
double number_field(const json& record, const char* key, std::string_view kind, const std::string& where) {
  const json& value = field(record, key, kind, where);
  if (value.is_null()) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  if (!value.is_number()) {
    throw DataError(fmt::format("{}: {} record's \"{}\" is {}, not a number", where, kind, key, value.dump()));
  }
  return value.get<double>();
}

// The run's label: the last component of its directory ("runs/tiny_mla/" and "runs/tiny_mla" are "tiny_mla").
std::string run_label(const fs::path& dir) {
  fs::path path = fs::absolute(dir).lexically_normal();
  if (!path.has_filename()) {
    path = path.parent_path();
  }
  return path.filename().string();
}

// What the run kept its activations in: run.dtype, or what "auto" became (trainer.cpp: bfloat16 autocast on CUDA,
// float32 on a CPU). With run.device "auto" as well, config.json does not say where the run was, and a GPU is assumed.
// Only for metrics.jsonl files older than their "start" records, which say.
std::pair<std::string, bool> run_dtype(const RunConfig& run) {
  if (run.dtype != "auto") {
    return {run.dtype, false};
  }
  if (run.device == "cpu") {
    return {"float32", false};
  }
  return {"bfloat16", run.device != "cuda"};
}

double median(std::vector<double> values) {
  const size_t middle = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(middle), values.end());
  const double upper = values[middle];
  if (values.size() % 2 == 1) {
    return upper;
  }
  const double lower = *std::max_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(middle));
  return (lower + upper) / 2;
}

// A number in a data file: shortest round-trip digits; gnuplot takes NaN as a missing point.
std::string data_number(double value) {
  return std::isfinite(value) ? fmt::format("{}", value) : "NaN";
}

// `text` as a gnuplot single-quoted string (in which only '' needs escaping).
std::string gnuplot_string(std::string_view text) {
  std::string out = "'";
  for (const char c : text) {
    out += c == '\'' ? std::string("''") : std::string(1, c);
  }
  return out + "'";
}

// `text` in a Markdown table cell.
std::string markdown_cell(std::string_view text) {
  std::string out;
  for (const char c : text) {
    out += c == '|' ? std::string("\\|") : std::string(1, c);
  }
  return out;
}

std::string train_data_file(const std::string& label) {
  return label + ".train.dat";
}
std::string eval_data_file(const std::string& label) {
  return label + ".eval.dat";
}

std::string train_data(const RunSummary& run) {
  std::string out =
      fmt::format("# mlagpt report: the train records of {} ({})\n# step tokens_trained loss tokens_per_second\n",
                  run.label, run.dir.string());
  for (const TrainRecord& record : run.metrics.train) {
    out += fmt::format("{} {} {} {}\n", record.step, record.tokens_trained, data_number(record.loss),
                       data_number(record.tokens_per_second));
  }
  return out;
}

std::string eval_data(const RunSummary& run) {
  std::string out =
      fmt::format("# mlagpt report: the eval records of {} ({})\n# step tokens_trained val_loss val_perplexity\n",
                  run.label, run.dir.string());
  for (const EvalRecord& record : run.metrics.eval) {
    out += fmt::format("{} {} {} {}\n", record.step, record.tokens_trained, data_number(record.val_loss),
                       data_number(record.val_perplexity));
  }
  return out;
}

// The gnuplot script of both plots. gnuplot runs it in DIR; `output_suffix` (set by write_report, "" by default)
// lets the PNGs be written to temporary names first.
std::string plot_script(const std::vector<RunSummary>& runs) {
  // Every run's training loss first, thin, then the validation losses over them, so that no train curve hides them.
  std::vector<std::string> loss_plots;
  std::vector<std::string> speed_plots;
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunSummary& run = runs[i];
    const size_t color = i + 1;  // gnuplot's line types 1, 2, ...: one color a run
    loss_plots.push_back(fmt::format("  {} using 2:3 with lines lw 1 lc {} title {}",
                                     gnuplot_string(train_data_file(run.label)), color,
                                     gnuplot_string(run.label + " train")));
    speed_plots.push_back(fmt::format("  {} using 2:4 with lines lw 1.5 lc {} title {}",
                                      gnuplot_string(train_data_file(run.label)), color, gnuplot_string(run.label)));
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunSummary& run = runs[i];
    if (!run.metrics.eval.empty()) {
      loss_plots.push_back(fmt::format("  {} using 2:3 with linespoints pt 7 ps 1.6 lw 2.5 lc {} title {}",
                                       gnuplot_string(eval_data_file(run.label)), i + 1,
                                       gnuplot_string(run.label + " val")));
    }
  }
  const auto join = [](const std::vector<std::string>& plots) {
    std::string out;
    for (size_t i = 0; i < plots.size(); ++i) {
      out += plots[i] + (i + 1 < plots.size() ? ", \\\n" : "\n");
    }
    return out;
  };
  return fmt::format(
      "# Written by `mlagpt report` (trainer/report.h): the plots of report.md from the .dat files next to it.\n"
      "# Render them again, after restyling, from this directory: gnuplot plots.gp\n"
      "# Columns: *.train.dat step, tokens trained, loss, tokens/s; *.eval.dat step, tokens trained, val loss, val "
      "perplexity.\n"
      "if (!exists(\"output_suffix\")) output_suffix = \"\"\n"
      "set terminal pngcairo size {},{} noenhanced font \",11\"\n"
      "set grid\n"
      "set xlabel 'tokens trained (all ranks)'\n"
      "set format x '%.1s%c'\n"
      "\n"
      "set output 'loss.png'.output_suffix\n"
      "set title 'Training and validation loss'\n"
      "set ylabel 'loss (cross-entropy, nats per token)'\n"
      "set key top right box opaque\n"
      "plot \\\n{}"
      "\n"
      "set output 'tokens_per_second.png'.output_suffix\n"
      "set title 'Training throughput'\n"
      "set ylabel 'tokens per second (all ranks)'\n"
      "set format y '%.1s%c'\n"
      "set yrange [0:*]\n"
      "set key outside right top box\n"
      "plot \\\n{}"
      "unset output\n",
      kReportPlotWidth, kReportPlotHeight, join(loss_plots), join(speed_plots));
}

std::string markdown(const std::vector<RunSummary>& runs) {
  std::string out =
      "# Training report\n\nWritten by `mlagpt report` from each run's `metrics.jsonl` and `config.json`:\n\n";
  for (const RunSummary& run : runs) {
    out += fmt::format("- `{}`: {}\n", run.label, fs::absolute(run.dir).lexically_normal().string());
  }
  out +=
      "\n| run | attention | parameters | KV cache (bytes/token) | steps | tokens | val loss | val ppl | tokens/s | "
      "wall time (s) |\n"
      "|:--|:--|--:|--:|--:|--:|--:|--:|--:|--:|\n";
  bool assumed = false;
  for (const RunSummary& run : runs) {
    assumed = assumed || run.kv_dtype_assumed;
    out += fmt::format("| {} | {} | {} | {} ({}{}) | {} | {} | {} | {} | {:.0f} | {:.1f} |\n", markdown_cell(run.label),
                       model::to_string(run.config.model.attention), run.parameters, run.kv_cache_bytes_per_token,
                       run.kv_dtype, run.kv_dtype_assumed ? ", assumed" : "", run.steps, run.tokens,
                       run.final_eval ? fmt::format("{:.4f}", run.final_eval->val_loss) : std::string("-"),
                       run.final_eval ? fmt::format("{:.2f}", run.final_eval->val_perplexity) : std::string("-"),
                       run.tokens_per_second, run.wall_seconds);
  }
  out +=
      "\n"
      "- parameters: all of the model's parameters (`count_parameters` of `model/accounting.h`) for the model in "
      "`config.json`, which after a compression pass holds the low-rank factors (`model.low_rank`).\n"
      "- KV cache: the values every cached token occupies across all layers (`kv_cache_values_per_token`) times the "
      "bytes per value of the run's dtype: the one its `start` record names (what `run.dtype` resolved to: `auto` "
      "is float32 on a CPU, bfloat16 on a GPU).\n";
  if (assumed) {
    out +=
        "- assumed: a `metrics.jsonl` from before its `start` records, with `run.dtype` and `run.device` both `auto`: "
        "`config.json` does not say where the run was, and bfloat16 is counted, as on a GPU (on a CPU the run kept "
        "float32, twice the bytes).\n";
  }
  out +=
      "- steps: optimizer steps with a train record; tokens: the sum of their `tokens` (every rank's).\n"
      "- val loss, val ppl: the last evaluation (`-`: the run has none).\n"
      "- tokens/s: the median of the train records' `tokens_per_second`, leaving out the first step's, which holds "
      "the warm-up (a run of one step keeps it).\n"
      "- wall time: from the start of the first step (its record's `time` less its `step_seconds`) to the last "
      "record of any kind (the final evaluation and checkpoint included); for a resumed run it includes the time "
      "it was stopped.\n"
      "- A resumed run logs again from its checkpoint's step: a train record of step s replaces every earlier "
      "record of step s or later.\n"
      "\n"
      "![Training and validation loss against tokens trained](loss.png)\n"
      "\n"
      "![Training tokens per second against tokens trained](tokens_per_second.png)\n";
  return out;
}

// Runs gnuplot on DIR/plots.gp in DIR, the PNGs' names ending in `suffix`, without a shell; its standard input and
// output on /dev/null. Returns its standard error (warnings); throws Error when it cannot be started, or exits
// non-zero or by a signal.
std::string run_gnuplot(const std::string& program, const fs::path& dir, const std::string& suffix) {
  // The child changes into `dir` before it looks for the program: a relative path must not move with it.
  const std::string executable = program.find('/') == std::string::npos ? program : fs::absolute(program).string();
  const std::vector<std::string> args = {"-e", fmt::format("output_suffix='{}'", suffix), "plots.gp"};
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(executable.c_str()));
  for (const std::string& arg : args) {
    argv.push_back(const_cast<char*>(arg.c_str()));
  }
  argv.push_back(nullptr);

  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    throw Error(fmt::format("report: cannot make a pipe for gnuplot: {}", std::strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  posix_spawn_file_actions_addchdir_np(&actions, dir.c_str());
  pid_t pid = 0;
  const int spawned = ::posix_spawnp(&pid, executable.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(err_pipe[1]);
  if (spawned != 0) {
    ::close(err_pipe[0]);
    throw Error(fmt::format(
        "report: cannot run the gnuplot program '{}': {} (install gnuplot, Debian's gnuplot-nox, or name the program "
        "in MLAGPT_GNUPLOT)",
        program, std::strerror(spawned)));
  }
  std::string err;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(err_pipe[0], buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    err.append(buffer, static_cast<size_t>(n));
  }
  ::close(err_pipe[0]);
  err.erase(err.find_last_not_of(" \t\r\n") + 1);  // npos + 1 = 0: nothing but blanks
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      throw Error(fmt::format("report: waiting for {}: {}", program, std::strerror(errno)));
    }
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const std::string how = WIFEXITED(status) ? fmt::format("exit status {}", WEXITSTATUS(status))
                                              : fmt::format("signal {}", WTERMSIG(status));
    throw Error(fmt::format("report: gnuplot ('{}') failed on {} ({}): {}", program, (dir / "plots.gp").string(), how,
                            err.empty() ? std::string("no message") : err));
  }
  return err;
}

}  // namespace

RunMetrics read_run_metrics(const fs::path& file) {
  const std::string text = data::read_file(file);  // IoError naming a missing or unreadable file
  RunMetrics metrics;
  int64_t line_number = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) {
      end = text.size();
    }
    const std::string_view line(text.data() + start, end - start);
    start = end + 1;
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) {
      continue;
    }
    const std::string where = fmt::format("{}:{}", file.string(), line_number);
    json record;
    try {
      record = json::parse(line);
    } catch (const json::parse_error& e) {
      throw IoError(fmt::format("{}: not a JSON object: {}", where, e.what()));
    }
    if (!record.is_object() || !record.contains("kind") || !record["kind"].is_string()) {
      throw DataError(fmt::format("{}: a record is a JSON object with a \"kind\"", where));
    }
    const std::string kind = record["kind"].get<std::string>();
    const double time = number_field(record, "time", kind, where);
    metrics.last_time = time;
    if (kind == "train") {
      TrainRecord train{.step = integer_field(record, "step", kind, where),
                        .loss = number_field(record, "loss", kind, where),
                        .step_seconds = number_field(record, "step_seconds", kind, where),
                        .tokens = integer_field(record, "tokens", kind, where),
                        .tokens_per_second = number_field(record, "tokens_per_second", kind, where),
                        .time = time};
      // A resumed run goes back to its checkpoint's step: the records after it are history it replaces.
      while (!metrics.train.empty() && metrics.train.back().step >= train.step) {
        metrics.train.pop_back();
      }
      while (!metrics.eval.empty() && metrics.eval.back().step >= train.step) {
        metrics.eval.pop_back();
      }
      metrics.train.push_back(train);
    } else if (kind == "eval") {
      EvalRecord eval{.step = integer_field(record, "step", kind, where),
                      .val_loss = number_field(record, "val_loss", kind, where),
                      .val_perplexity = number_field(record, "val_perplexity", kind, where),
                      .time = time};
      while (!metrics.eval.empty() && metrics.eval.back().step >= eval.step) {
        metrics.eval.pop_back();
      }
      metrics.eval.push_back(eval);
    } else if (kind == "start") {
      const json& dtype = field(record, "dtype", kind, where);
      if (!dtype.is_string()) {
        throw DataError(fmt::format("{}: start record's \"dtype\" is {}, not a string", where, dtype.dump()));
      }
      metrics.dtype = dtype.get<std::string>();
    }  // checkpoint and compression records count only for the last time
  }
  if (metrics.train.empty()) {
    throw DataError(fmt::format("{}: no train records (has the run taken a step?)", file.string()));
  }
  int64_t tokens = 0;
  for (TrainRecord& record : metrics.train) {
    tokens += record.tokens;
    record.tokens_trained = tokens;
  }
  size_t next = 0;  // train records and evaluations both ascend by step
  for (EvalRecord& eval : metrics.eval) {
    while (next < metrics.train.size() && metrics.train[next].step <= eval.step) {
      ++next;
    }
    eval.tokens_trained = next == 0 ? 0 : metrics.train[next - 1].tokens_trained;
  }
  return metrics;
}

RunSummary summarize_run(const fs::path& run_dir) {
  if (!fs::is_directory(run_dir)) {
    throw IoError(fmt::format("report: {} is not a run directory (no such directory)", run_dir.string()));
  }
  RunSummary run;
  run.label = run_label(run_dir);
  run.dir = run_dir;
  run.metrics = read_run_metrics(run_dir / "metrics.jsonl");
  const fs::path config_file = run_dir / "config.json";
  json config;
  try {
    config = json::parse(data::read_file(config_file));
  } catch (const json::parse_error& e) {
    throw IoError(fmt::format("{}: not JSON: {}", config_file.string(), e.what()));
  }
  run.config = train_config_from_json(config, config_file.string());

  run.parameters = model::count_parameters(run.config.model).total;
  // The dtype the run says it resolved to; for files without start records, what config.json allows to infer.
  const auto [dtype, assumed] =
      run.metrics.dtype.empty() ? run_dtype(run.config.run) : std::pair<std::string, bool>(run.metrics.dtype, false);
  run.kv_dtype = dtype;
  run.kv_dtype_assumed = assumed;
  run.kv_cache_bytes_per_token =
      model::kv_cache_values_per_token(run.config.model) * model::bytes_per_value(run.kv_dtype);
  const std::vector<TrainRecord>& train = run.metrics.train;
  run.steps = static_cast<int64_t>(train.size());
  run.tokens = train.back().tokens_trained;
  if (!run.metrics.eval.empty()) {
    run.final_eval = run.metrics.eval.back();
  }
  std::vector<double> speeds;
  for (size_t i = train.size() > 1 ? 1 : 0; i < train.size(); ++i) {
    speeds.push_back(train[i].tokens_per_second);
  }
  run.tokens_per_second = median(std::move(speeds));
  run.wall_seconds = run.metrics.last_time - (train.front().time - train.front().step_seconds);
  return run;
}

ReportFiles write_report(const ReportOptions& options) {
  if (options.runs.empty()) {
    throw ConfigError("report: name at least one run directory");
  }
  if (options.out.empty()) {
    throw ConfigError("report: --out names the directory to write the report into");
  }
  // Everything is read and checked before anything is written.
  std::vector<RunSummary> runs;
  std::map<std::string, fs::path> labels;
  for (const std::string& dir : options.runs) {
    RunSummary run = summarize_run(dir);
    const auto [found, inserted] = labels.emplace(run.label, run.dir);
    if (!inserted) {
      throw ConfigError(fmt::format(
          "report: {} and {} have the same label '{}' (a run's label is its directory's last component); copy or "
          "link one under another name",
          found->second.string(), run.dir.string(), run.label));
    }
    runs.push_back(std::move(run));
  }

  const fs::path& out = options.out;
  std::error_code error;
  fs::create_directories(out, error);
  if (error || !fs::is_directory(out)) {
    throw IoError(fmt::format("report: cannot create the directory {}: {}", out.string(),
                              error ? error.message() : std::string("a file of that name is in the way")));
  }
  for (const RunSummary& run : runs) {
    data::write_file_atomically(out / train_data_file(run.label), train_data(run));
    if (!run.metrics.eval.empty()) {
      data::write_file_atomically(out / eval_data_file(run.label), eval_data(run));
    }
  }
  data::write_file_atomically(out / "plots.gp", plot_script(runs));

  const ReportFiles files{.markdown = out / "report.md",
                          .loss_plot = out / "loss.png",
                          .tokens_per_second_plot = out / "tokens_per_second.png"};
  const std::string suffix = fmt::format(".tmp-{}", ::getpid());
  const std::vector<fs::path> plots = {files.loss_plot, files.tokens_per_second_plot};
  const auto remove_temporaries = [&] {
    for (const fs::path& plot : plots) {
      std::error_code ignored;
      fs::remove(fs::path(plot) += suffix, ignored);
    }
  };
  try {
    const std::string warnings = run_gnuplot(options.gnuplot, out, suffix);
    if (!warnings.empty()) {
      spdlog::warn("[report] gnuplot said: {}", warnings);
    }
    for (const fs::path& plot : plots) {
      fs::path temporary = plot;
      temporary += suffix;
      if (!fs::is_regular_file(temporary) || fs::file_size(temporary) == 0) {
        throw Error(fmt::format("report: gnuplot ('{}') ran {} but wrote no {}", options.gnuplot,
                                (out / "plots.gp").string(), plot.string()));
      }
      data::fsync_file(temporary);
      std::error_code renamed;
      fs::rename(temporary, plot, renamed);
      if (renamed) {
        throw IoError(
            fmt::format("report: cannot rename {} to {}: {}", temporary.string(), plot.string(), renamed.message()));
      }
    }
  } catch (...) {
    remove_temporaries();
    throw;
  }
  data::write_file_atomically(files.markdown, markdown(runs));
  spdlog::info("[report] {} run(s): wrote {}, {} and {} (data and plots.gp beside them)", runs.size(),
               files.markdown.string(), files.loss_plot.string(), files.tokens_per_second_plot.string());
  return files;
}

}  // namespace mlagpt::trainer
