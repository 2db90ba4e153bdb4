// `mlagpt report` on two short runs of the mlagpt executable, an MLA and an MHA model, trained once for the suite:
// the two plots are PNGs of the size plots.gp asks for with something drawn on them, and the table of report.md has
// one row per run whose numbers are what this test works out from the run's metrics.jsonl itself (steps, tokens,
// the last evaluation, the median tokens/s, the wall time) and what `mlagpt model-info` prints for the run's config
// (parameters, KV-cache bytes per token). A metrics.jsonl with a resumed run's re-logged steps keeps the last record
// of each; a missing or bad metrics.jsonl, a repeated label, and a gnuplot that is missing or fails are errors that
// name the file or the program and leave no report behind.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "support/prerequisites.h"
#include "support/small_dataset.h"
#include "support/temp_dir.h"

namespace fs = std::filesystem;

namespace {

using Command = mlagpt::testing::CommandOutput;

// What the test works out from a metrics.jsonl without duplicate steps, in the definitions of report.md's notes.
struct Expected {
  int64_t steps = 0;
  int64_t tokens = 0;
  double step_seconds_sum = 0;
  double val_loss = 0;
  double val_perplexity = 0;
  int64_t evals = 0;
  double tokens_per_second = 0;
  double wall_seconds = 0;
};

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<nlohmann::json> read_records(const fs::path& file) {
  std::vector<nlohmann::json> records;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    records.push_back(nlohmann::json::parse(line));
  }
  return records;
}

Expected expected_from(const fs::path& metrics) {
  Expected expected;
  std::vector<double> speeds;
  std::optional<nlohmann::json> first_train;
  double last_time = 0;
  int64_t previous_step = 0;
  for (const nlohmann::json& record : read_records(metrics)) {
    last_time = record.at("time").get<double>();
    if (record.at("kind") == "train") {
      EXPECT_EQ(record.at("step").get<int64_t>(), previous_step + 1) << "a run of this suite logs every step once";
      previous_step = record.at("step").get<int64_t>();
      if (!first_train) {
        first_train = record;
      } else {
        speeds.push_back(record.at("tokens_per_second").get<double>());
      }
      ++expected.steps;
      expected.tokens += record.at("tokens").get<int64_t>();
      expected.step_seconds_sum += record.at("step_seconds").get<double>();
    } else if (record.at("kind") == "eval") {
      expected.val_loss = record.at("val_loss").get<double>();
      expected.val_perplexity = record.at("val_perplexity").get<double>();
      ++expected.evals;
    }
  }
  std::sort(speeds.begin(), speeds.end());
  const size_t n = speeds.size();
  expected.tokens_per_second = n % 2 == 1 ? speeds[n / 2] : (speeds[n / 2 - 1] + speeds[n / 2]) / 2;
  expected.wall_seconds =
      last_time - (first_train->at("time").get<double>() - first_train->at("step_seconds").get<double>());
  return expected;
}

// report.md's table: its cells by run label (the first cell).
std::map<std::string, std::vector<std::string>> table_rows(const std::string& markdown) {
  std::map<std::string, std::vector<std::string>> rows;
  std::istringstream in(markdown);
  bool header_seen = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("| run |", 0) == 0) {
      header_seen = true;
      continue;
    }
    if (!header_seen || line.rfind("|:", 0) == 0) {
      continue;
    }
    if (line.rfind("| ", 0) != 0) {
      break;
    }
    std::vector<std::string> cells;
    std::istringstream cells_in(line.substr(1));
    for (std::string cell; std::getline(cells_in, cell, '|');) {
      const size_t begin = cell.find_first_not_of(' ');
      const size_t end = cell.find_last_not_of(' ');
      cells.push_back(begin == std::string::npos ? "" : cell.substr(begin, end - begin + 1));
    }
    rows[cells.at(0)] = cells;
  }
  return rows;
}

struct PngHeader {
  bool signature = false;
  uint32_t width = 0;
  uint32_t height = 0;
};

PngHeader png_header(const std::string& bytes) {
  PngHeader header;
  header.signature =
      bytes.size() > 24 && bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0 && bytes.compare(12, 4, "IHDR") == 0;
  if (header.signature) {
    const auto be32 = [&bytes](size_t at) {
      uint32_t value = 0;
      for (size_t i = 0; i < 4; ++i) {
        value = value << 8 | static_cast<unsigned char>(bytes[at + i]);
      }
      return value;
    };
    header.width = be32(16);
    header.height = be32(20);
  }
  return header;
}

int64_t without_commas(const std::string& digits) {
  std::string plain;
  std::copy_if(digits.begin(), digits.end(), std::back_inserter(plain), [](char c) { return c != ','; });
  return std::stoll(plain);
}

class Report : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<mlagpt::testing::TempDir>();
    mlagpt::testing::prepare_small_byte_dataset(dir_->path());
    has_gnuplot_ = mlagpt::testing::run_command("command -v gnuplot") != "";
    // No two sizes equal (T 32 < block_size 40; C 48; MLA: Dc 24, Dn 14, Dv 10, Dr 4; MHA: Dh 12).
    const std::string mla_model =
        "attention = \"mla\"\nkv_lora_rank = 24\nq_lora_rank = 0\nqk_nope_head_dim = 14\nqk_rope_head_dim = 4\n"
        "v_head_dim = 10\n";
    for (const auto& [label, attention] :
         std::vector<std::pair<std::string, std::string>>{{"mla", mla_model}, {"mha", "attention = \"mha\"\n"}}) {
      const fs::path config = *dir_ / (label + ".toml");
      std::ofstream(config) << fmt::format(
          "[model]\n{}vocab_size = 257\nblock_size = {}\nn_layer = 2\nn_embd = 48\nn_head = 4\n"
          "[run]\nout_dir = \"{}\"\ndevice = \"cpu\"\nthreads = 1\nmax_steps = {}\nlog_every = 5\n"
          "[data]\ndir = \"{}\"\nbatch_size = {}\nseq_len = {}\n"
          "[optim]\nlr = 1e-2\n[schedule]\nwarmup_steps = 3\nmin_lr = 1e-3\n"
          "[eval]\nevery = {}\nbatches = 2\n[checkpoint]\nevery = 0\n",
          attention, kBlockSize, run_dir(label).string(), kSteps, (*dir_ / "data").string(), kBatch, kSeqLen,
          kEvalEvery);
      const auto start = std::chrono::steady_clock::now();
      Command trained = mlagpt(fmt::format("train --config {}", config.string()));
      train_seconds_[label] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      trainings_[label] = trained;
    }
    if (ready() && has_gnuplot_) {
      report_ = mlagpt(fmt::format("report {} {}/ --out {}", run_dir("mla").string(), run_dir("mha").string(),
                                   (*dir_ / "report").string()));
    }
  }
  static void TearDownTestSuite() {
    dir_.reset();
    trainings_.clear();
    train_seconds_.clear();
  }

  void SetUp() override {
    for (const auto& [label, trained] : trainings_) {
      ASSERT_EQ(trained.status, 0) << "training run " << label << " failed:\n" << trained.err;
    }
  }

  static bool ready() {
    return std::all_of(trainings_.begin(), trainings_.end(), [](const auto& run) { return run.second.status == 0; });
  }
  static fs::path run_dir(const std::string& label) { return *dir_ / "runs" / label; }

  // Runs `mlagpt ARGS` with `env` before it (VAR=value ...), its standard error to a file.
  static Command mlagpt(const std::string& args, const std::string& env = "env -u MLAGPT_GNUPLOT") {
    return mlagpt::testing::run_capturing(fmt::format("{} {} {}", env, MLAGPT_EXECUTABLE, args), *dir_ / "stderr.txt");
  }

  static constexpr int64_t kSteps = 12;
  static constexpr int64_t kEvalEvery = 4;
  static constexpr int64_t kBatch = 4;
  static constexpr int64_t kSeqLen = 32;
  static constexpr int64_t kBlockSize = 40;

  static inline std::unique_ptr<mlagpt::testing::TempDir> dir_;
  static inline bool has_gnuplot_ = false;
  static inline std::map<std::string, Command> trainings_;
  static inline std::map<std::string, double> train_seconds_;  // of each `mlagpt train` process, measured here
  static inline Command report_;
};

#define REQUIRE_GNUPLOT() \
  MLAGPT_REQUIRE_INSTALLED(has_gnuplot_, "gnuplot is missing: install Debian's gnuplot-nox (deploy/setup.sh does)")

TEST_F(Report, WritesTwoPngPlotsOfTheSizeItsScriptAsksFor) {
  REQUIRE_GNUPLOT();
  ASSERT_EQ(report_.status, 0) << report_.err;
  EXPECT_EQ(report_.out, (*dir_ / "report" / "report.md").string() + "\n");
  const std::string script = read_text(*dir_ / "report" / "plots.gp");
  std::smatch size;
  ASSERT_TRUE(std::regex_search(script, size, std::regex(R"(set terminal pngcairo size (\d+),(\d+))"))) << script;
  const uint32_t width = std::stoul(size[1]);
  const uint32_t height = std::stoul(size[2]);
  EXPECT_GE(width, 640U);
  EXPECT_GE(height, 400U);

  // A blank image of that size, from the same gnuplot: a plot with axes, lines and a legend compresses far worse.
  const fs::path blank = *dir_ / "blank.png";
  int status = -1;
  mlagpt::testing::run_command(
      fmt::format("gnuplot -e \"set terminal pngcairo size {},{}; set output '{}'; clear; unset output\"", width,
                  height, blank.string()),
      &status);
  ASSERT_EQ(status, 0);
  const size_t blank_bytes = fs::file_size(blank);
  for (const char* name : {"loss.png", "tokens_per_second.png"}) {
    SCOPED_TRACE(name);
    const std::string bytes = read_text(*dir_ / "report" / name);
    const PngHeader header = png_header(bytes);
    ASSERT_TRUE(header.signature) << "not a PNG";
    EXPECT_EQ(header.width, width);
    EXPECT_EQ(header.height, height);
    EXPECT_GT(bytes.size(), 3 * blank_bytes) << "a blank image of this size has " << blank_bytes << " bytes";
  }
  // The data gnuplot drew, and no temporary file, are left in DIR.
  for (const char* name : {"mla.train.dat", "mla.eval.dat", "mha.train.dat", "mha.eval.dat", "report.md"}) {
    EXPECT_TRUE(fs::is_regular_file(*dir_ / "report" / name)) << name;
  }
  for (const auto& entry : fs::directory_iterator(*dir_ / "report")) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos) << entry.path();
  }
  EXPECT_NE(read_text(*dir_ / "report" / "report.md").find("![Training and validation loss"), std::string::npos);
}

TEST_F(Report, TableRowsHoldWhatMetricsJsonlSays) {
  REQUIRE_GNUPLOT();
  ASSERT_EQ(report_.status, 0) << report_.err;
  const auto rows = table_rows(read_text(*dir_ / "report" / "report.md"));
  ASSERT_EQ(rows.size(), 2U) << read_text(*dir_ / "report" / "report.md");
  for (const std::string label : {"mla", "mha"}) {
    SCOPED_TRACE(label);
    ASSERT_TRUE(rows.count(label)) << "no row for " << label;
    const std::vector<std::string>& cells = rows.at(label);
    ASSERT_EQ(cells.size(), 10U);
    const Expected expected = expected_from(run_dir(label) / "metrics.jsonl");
    EXPECT_EQ(cells[1], label);  // the attention kind
    EXPECT_EQ(expected.steps, kSteps);
    EXPECT_EQ(cells[4], std::to_string(expected.steps));
    EXPECT_EQ(expected.tokens, kSteps * kBatch * kSeqLen);
    EXPECT_EQ(cells[5], std::to_string(expected.tokens));
    EXPECT_EQ(expected.evals, kSteps / kEvalEvery);
    EXPECT_EQ(cells[6], fmt::format("{:.4f}", expected.val_loss));
    EXPECT_EQ(cells[7], fmt::format("{:.2f}", expected.val_perplexity));
    EXPECT_EQ(cells[8], fmt::format("{:.0f}", expected.tokens_per_second));
    EXPECT_EQ(cells[9], fmt::format("{:.1f}", expected.wall_seconds));
    // The wall time covers every step and fits inside the training process's life.
    EXPECT_GE(expected.wall_seconds, expected.step_seconds_sum);
    EXPECT_LE(expected.wall_seconds, train_seconds_.at(label));
  }
  // The runs differ where MLA and MHA differ.
  EXPECT_NE(rows.at("mla")[3], rows.at("mha")[3]);
}

TEST_F(Report, ParametersAndKvCacheAreWhatModelInfoPrints) {
  REQUIRE_GNUPLOT();
  ASSERT_EQ(report_.status, 0) << report_.err;
  const auto rows = table_rows(read_text(*dir_ / "report" / "report.md"));
  for (const std::string label : {"mla", "mha"}) {
    SCOPED_TRACE(label);
    ASSERT_TRUE(rows.count(label));
    // The runs trained on the CPU with run.dtype auto: float32.
    const Command info =
        mlagpt(fmt::format("model-info --config {} --dtype float32", (*dir_ / (label + ".toml")).string()));
    ASSERT_EQ(info.status, 0) << info.err;
    std::smatch parameters;
    std::smatch per_token;
    ASSERT_TRUE(std::regex_search(info.out, parameters, std::regex(R"(\nparameters +\S+ +([0-9,]+))"))) << info.out;
    ASSERT_TRUE(std::regex_search(info.out, per_token, std::regex(R"(per token +([0-9,]+) B)"))) << info.out;
    EXPECT_EQ(rows.at(label)[2], std::to_string(without_commas(parameters[1])));
    EXPECT_EQ(rows.at(label)[3], fmt::format("{} (float32)", without_commas(per_token[1])));
  }
}

// A run stopped after step 4 and resumed from its checkpoint of step 2: steps 3 and 4 are logged again, and the
// evaluation of the first attempt's step 4 is history the resumed run replaced.
TEST_F(Report, AResumedRunKeepsTheLastRecordOfEachStep) {
  REQUIRE_GNUPLOT();
  const fs::path run = *dir_ / "resumed" / "again";
  fs::create_directories(run);
  fs::copy_file(run_dir("mla") / "config.json", run / "config.json");
  const int64_t tokens = 100;
  const auto train = [tokens](int64_t step, double time, double loss, double speed) {
    return nlohmann::json{{"kind", "train"},
                          {"time", time},
                          {"step", step},
                          {"loss", loss},
                          {"lr", 1e-3},
                          {"grad_norm", 1.0},
                          {"step_seconds", 0.5},
                          {"tokens", tokens},
                          {"tokens_per_second", speed},
                          {"skipped_steps_total", 0}}
        .dump();
  };
  const auto eval = [](int64_t step, double time, double loss) {
    return nlohmann::json{
        {"kind", "eval"}, {"time", time}, {"step", step}, {"val_loss", loss}, {"val_perplexity", std::exp(loss)}}
        .dump();
  };
  // The start records say what the run's dtype resolved to (the last one counts): bfloat16, unlike the float32 of
  // the CPU run whose config.json this is.
  std::ofstream(run / "metrics.jsonl")
      << R"({"kind": "start", "time": 999.0, "step": 0, "device": "cpu", "dtype": "float32", "world_size": 1, "dp": 1, "tp": 1})"
      << "\n"
      << R"({"kind": "start", "time": 999.5, "step": 0, "device": "cuda:0", "dtype": "bfloat16", "world_size": 1, "dp": 1, "tp": 1})"
      << "\n"
      << train(1, 1000.0, 5.0, 10) << "\n"
      << train(2, 1001.0, 4.5, 200) << "\n"
      << R"({"kind": "checkpoint_save", "time": 1001.5, "step": 2, "seconds": 0.1, "bytes": 1, "bytes_all_ranks": 1})"
      << "\n"
      << train(3, 1002.0, 4.25, 100) << "\n"
      << train(4, 1003.0, 4.0, 100) << "\n"
      << eval(4, 1003.5, 4.5) << "\n"
      << R"({"kind": "checkpoint_load", "time": 2000.0, "step": 2, "seconds": 0.1, "bytes": 1, "bytes_all_ranks": 0})"
      << "\n"
      << train(3, 2001.0, 3.5, 300) << "\n"
      << train(4, 2002.0, 3.25, 500) << "\n"
      << train(5, 2003.0, 3.0, 700) << "\n"
      << eval(5, 2004.0, 4.25) << "\n"
      << R"({"kind": "checkpoint_save", "time": 2004.5, "step": 5, "seconds": 0.1, "bytes": 1, "bytes_all_ranks": 1})"
      << "\n";
  const fs::path out = *dir_ / "resumed_report";
  const Command report = mlagpt(fmt::format("report {} --out {}", run.string(), out.string()));
  ASSERT_EQ(report.status, 0) << report.err;
  const auto rows = table_rows(read_text(out / "report.md"));
  ASSERT_TRUE(rows.count("again")) << read_text(out / "report.md");
  const std::vector<std::string>& cells = rows.at("again");
  EXPECT_NE(cells[3].find("(bfloat16)"), std::string::npos) << cells[3];
  EXPECT_EQ(cells[4], "5");
  EXPECT_EQ(cells[5], std::to_string(5 * tokens));
  EXPECT_EQ(cells[6], "4.2500");
  EXPECT_EQ(cells[7], fmt::format("{:.2f}", std::exp(4.25)));
  EXPECT_EQ(cells[8], "400");  // the median of 200, 300, 500, 700 (step 1's 10 is warm-up)
  EXPECT_EQ(cells[9], fmt::format("{:.1f}", 2004.5 - (1000.0 - 0.5)));
  // The plotted data: steps 1 to 5 once each, the resumed run's 3 and 4; only the evaluation of step 5.
  const std::string train_data = read_text(out / "again.train.dat");
  EXPECT_NE(train_data.find("\n3 300 3.5 300\n4 400 3.25 500\n5 500 3 700\n"), std::string::npos) << train_data;
  EXPECT_EQ(train_data.find(" 100\n"), std::string::npos) << train_data;
  const std::string eval_data = read_text(out / "again.eval.dat");
  EXPECT_NE(eval_data.find("\n5 500 4.25 "), std::string::npos) << eval_data;
  EXPECT_EQ(eval_data.find("\n4 "), std::string::npos) << eval_data;
}

TEST_F(Report, ARunWithoutMetricsIsNamedAndNothingIsWritten) {
  const fs::path empty = *dir_ / "no_metrics" / "empty_run";
  fs::create_directories(empty);
  const fs::path out = *dir_ / "no_metrics_report";
  const Command report =
      mlagpt(fmt::format("report {} {} --out {}", run_dir("mla").string(), empty.string(), out.string()));
  EXPECT_NE(report.status, 0);
  EXPECT_NE(report.err.find((empty / "metrics.jsonl").string()), std::string::npos) << report.err;
  EXPECT_EQ(report.out, "");
  EXPECT_FALSE(fs::exists(out)) << "a failed report wrote " << out;
}

TEST_F(Report, ABadMetricsLineIsNamedByFileAndLine) {
  const fs::path run = *dir_ / "bad_line" / "broken";
  fs::create_directories(run);
  fs::copy_file(run_dir("mha") / "config.json", run / "config.json");
  const std::vector<nlohmann::json> records = read_records(run_dir("mha") / "metrics.jsonl");
  std::ofstream(run / "metrics.jsonl") << records.at(0).dump() << "\n"
                                       << records.at(1).dump() << "\n{\"kind\": \"tra\n";
  const fs::path out = *dir_ / "bad_line_report";
  Command report = mlagpt(fmt::format("report {} --out {}", run.string(), out.string()));
  EXPECT_NE(report.status, 0);
  EXPECT_NE(report.err.find((run / "metrics.jsonl").string() + ":3"), std::string::npos) << report.err;
  EXPECT_FALSE(fs::exists(out));

  // A train record without its tokens: the field is named.
  ASSERT_EQ(records.at(0).at("kind"), "start");  // then the first step
  nlohmann::json incomplete = records.at(1);
  ASSERT_EQ(incomplete.at("kind"), "train");
  incomplete.erase("tokens");
  std::ofstream(run / "metrics.jsonl") << incomplete.dump() << "\n";
  report = mlagpt(fmt::format("report {} --out {}", run.string(), out.string()));
  EXPECT_NE(report.status, 0);
  EXPECT_NE(report.err.find((run / "metrics.jsonl").string() + ":1: train record without \"tokens\""),
            std::string::npos)
      << report.err;

  // Only checkpoint records: no train record to report.
  std::ofstream(run / "metrics.jsonl")
      << R"({"kind": "checkpoint_load", "time": 5.0, "step": 2, "seconds": 0.1, "bytes": 1, "bytes_all_ranks": 0})"
      << "\n";
  report = mlagpt(fmt::format("report {} --out {}", run.string(), out.string()));
  EXPECT_NE(report.status, 0);
  EXPECT_NE(report.err.find((run / "metrics.jsonl").string() + ": no train records"), std::string::npos) << report.err;
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(Report, TwoRunsWithOneLabelAreRefused) {
  const fs::path twin = *dir_ / "elsewhere" / "mla";
  fs::create_directories(twin.parent_path());
  fs::copy(run_dir("mla"), twin, fs::copy_options::recursive);
  const fs::path out = *dir_ / "twin_report";
  const Command report =
      mlagpt(fmt::format("report {} {} --out {}", run_dir("mla").string(), twin.string(), out.string()));
  EXPECT_NE(report.status, 0);
  EXPECT_NE(report.err.find("same label 'mla'"), std::string::npos) << report.err;
  EXPECT_NE(report.err.find(run_dir("mla").string()), std::string::npos) << report.err;
  EXPECT_NE(report.err.find(twin.string()), std::string::npos) << report.err;
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(Report, AMissingOrFailingGnuplotIsAClearErrorAndLeavesNoReport) {
  const std::string runs = fmt::format("{} {}", run_dir("mla").string(), run_dir("mha").string());
  const fs::path missing_out = *dir_ / "no_gnuplot";
  Command report =
      mlagpt(fmt::format("report {} --out {}", runs, missing_out.string()), "env MLAGPT_GNUPLOT=/nonexistent");
  EXPECT_NE(report.status, 0);
  EXPECT_NE(report.err.find("cannot run the gnuplot program '/nonexistent'"), std::string::npos) << report.err;
  EXPECT_FALSE(fs::exists(missing_out / "report.md"));
  EXPECT_FALSE(fs::exists(missing_out / "loss.png"));

  // A "gnuplot" that complains and fails: its exit status and standard error are in the message.
  const fs::path failing = *dir_ / "failing_gnuplot.sh";
  std::ofstream(failing) << "#!/bin/sh\necho 'line 12: something went wrong' >&2\nexit 3\n";
  fs::permissions(failing, fs::perms::owner_all);
  const fs::path failing_out = *dir_ / "failing_gnuplot";
  report = mlagpt(fmt::format("report {} --out {}", runs, failing_out.string()),
                  fmt::format("env MLAGPT_GNUPLOT={}", failing.string()));
  EXPECT_NE(report.status, 0);
  EXPECT_NE(report.err.find("exit status 3"), std::string::npos) << report.err;
  EXPECT_NE(report.err.find("line 12: something went wrong"), std::string::npos) << report.err;
  EXPECT_FALSE(fs::exists(failing_out / "report.md"));
  EXPECT_FALSE(fs::exists(failing_out / "loss.png"));
  EXPECT_TRUE(fs::exists(failing_out / "plots.gp")) << "the script stays, to run by hand";
}

}  // namespace
