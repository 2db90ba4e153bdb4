// Metrics sinks: the JSONL file gets one parseable line per record and keeps earlier lines when reopened (a resumed
// run); the Prometheus sink's values are served by the exporter under the names of docs/design.md ("Metrics").
#include "monitoring/metrics_sink.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <limits>
#include <regex>
#include <sstream>

#include "monitoring/prometheus_exporter.h"
#include "support/temp_dir.h"

using mlagpt::monitoring::EvalMetrics;
using mlagpt::monitoring::StepMetrics;

TEST(JsonlSink, OneLinePerRecordAppendedAcrossRuns) {
  mlagpt::testing::TempDir dir;
  const auto path = dir / "run" / "metrics.jsonl";
  {
    mlagpt::monitoring::JsonlSink sink(path);
    sink.record(StepMetrics{.step = 1, .loss = 4.5, .learning_rate = 1e-3, .tokens = 2048});
  }
  {
    mlagpt::monitoring::JsonlSink sink(path);
    sink.record(StepMetrics{.step = 2, .loss = 4.25, .mfu = 0.4});
    sink.record(EvalMetrics{.step = 2, .loss = 4.0, .perplexity = 54.6});
    sink.record(mlagpt::monitoring::RunStartMetrics{
        .step = 2, .device = "cuda:1", .dtype = "bfloat16", .world_size = 8, .dp = 4, .tp = 2});
  }
  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(nlohmann::json::parse(line));
  }
  ASSERT_EQ(lines.size(), 4U);
  for (const auto& line : lines) {  // when it was written
    EXPECT_GT(line.at("time").get<double>(), 1.7e9) << line;
  }
  EXPECT_EQ(lines[3]["kind"], "start");
  EXPECT_EQ(lines[3]["dtype"], "bfloat16");
  EXPECT_EQ(lines[3]["device"], "cuda:1");
  EXPECT_EQ(lines[3]["tp"], 2);
  EXPECT_EQ(lines[0]["step"], 1);
  EXPECT_EQ(lines[0]["tokens"], 2048);
  EXPECT_FALSE(lines[0].contains("mfu"));
  EXPECT_DOUBLE_EQ(lines[1]["mfu"].get<double>(), 0.4);
  EXPECT_EQ(lines[2]["kind"], "eval");
  EXPECT_DOUBLE_EQ(lines[2]["val_loss"].get<double>(), 4.0);
}

namespace {

const mlagpt::monitoring::MetricsIdentity kIdentity{.job = "tiny-mla",
                                                    .rank = 3,
                                                    .dp_rank = 1,
                                                    .tp_rank = 1,
                                                    .device = "cpu",
                                                    .build = {{"version", "9.8.7"}, {"torch", "2.11.0"}}};
// prometheus-cpp writes the constant labels first, in name order, then a series' own, in name order.
const std::string kLabels = R"(dp_rank="1",job="tiny-mla",rank="3",tp_rank="1")";

bool has_line(const std::string& body, const std::string& line) {
  return ("\n" + body).find("\n" + line + "\n") != std::string::npos;
}

}  // namespace

TEST(PrometheusSink, ServesTrainingMetricsUnderTheJobAndRankLabels) {
  mlagpt::monitoring::PrometheusExporter exporter("127.0.0.1:0");
  mlagpt::monitoring::PrometheusSink sink(exporter.registry(), kIdentity);
  sink.record(StepMetrics{.step = 7, .loss = 2.5, .tokens = 1000, .tokens_per_second = 500, .rank_tokens = 250});
  sink.record(StepMetrics{.step = 8,
                          .loss = 2.25,
                          .learning_rate = 3e-4,
                          .grad_norm = 0.75,
                          .step_seconds = 0.3,
                          .tokens = 1000,
                          .tokens_per_second = 600,
                          .skipped_steps_total = 2,
                          .rank_tokens = 250});
  sink.record(EvalMetrics{.step = 8, .loss = 2.75, .perplexity = 15.64});
  sink.record(mlagpt::monitoring::CheckpointMetrics{.step = 8, .save = true, .seconds = 0.125, .bytes = 4096});
  const std::string body = mlagpt::testing::http_get(exporter.port(), "/metrics");
  for (const std::string& line : std::vector<std::string>{
           "mlagpt_train_step{" + kLabels + "} 8", "mlagpt_train_loss{" + kLabels + "} 2.25",
           "mlagpt_learning_rate{" + kLabels + "} 0.0003", "mlagpt_grad_norm{" + kLabels + "} 0.75",
           "mlagpt_tokens_total{" + kLabels + "} 500",  // this replica's tokens
           "mlagpt_tokens_per_second{" + kLabels + "} 600", "mlagpt_steps_total{" + kLabels + "} 2",
           "mlagpt_nonfinite_steps_total{" + kLabels + "} 2", "mlagpt_eval_loss{" + kLabels + "} 2.75",
           "mlagpt_eval_perplexity{" + kLabels + "} 15.64", "mlagpt_checkpoint_save_seconds{" + kLabels + "} 0.125",
           "mlagpt_checkpoint_saves_total{" + kLabels + "} 1",
           "mlagpt_checkpoint_written_bytes_total{" + kLabels + "} 4096",
           "mlagpt_step_seconds_count{" + kLabels + "} 2", "mlagpt_step_seconds_sum{" + kLabels + "} 0.3",
           "# TYPE mlagpt_step_seconds histogram",
           "mlagpt_build_info{" +
               std::string(R"(dp_rank="1",job="tiny-mla",rank="3",tp_rank="1",torch="2.11.0",version="9.8.7"})") +
               " 1"}) {
    EXPECT_TRUE(has_line(body, line)) << line << "\n" << body;
  }
  // No MFU where none was measured (a CPU without monitoring.peak_flops), and no figure of an event that has not
  // happened: absent, not 0.
  for (const char* absent : {"mlagpt_mfu_ratio", "mlagpt_checkpoint_load_seconds", "mlagpt_compression_seconds"}) {
    EXPECT_EQ(body.find(absent), std::string::npos) << absent << "\n" << body;
  }
  // Never a step label; every mlagpt_ series carries job and rank.
  std::istringstream lines(body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("mlagpt_", 0) == 0) {
      EXPECT_NE(line.find(R"(job="tiny-mla")"), std::string::npos) << line;
      EXPECT_NE(line.find(R"(,rank="3")"), std::string::npos) << line;
      EXPECT_EQ(line.find("step="), std::string::npos) << line;
    }
  }
  const std::smatch start = [&] {
    std::smatch match;
    std::regex_search(body, match, std::regex(R"(mlagpt_process_start_time_seconds\{[^}]*\} (\S+))"));
    return match;
  }();
  ASSERT_EQ(start.size(), 2U) << body;
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  const double started = std::stod(start[1].str());
  EXPECT_LE(started, now + 1);
  EXPECT_GT(started, now - 3600) << "this test process started within the hour";
}

TEST(PrometheusSink, StepTimesFallIntoBucketsOfTheHistogram) {
  const auto bounds = mlagpt::monitoring::step_seconds_buckets();
  ASSERT_EQ(bounds.size(), 29U);
  EXPECT_DOUBLE_EQ(bounds.front(), 1e-3);
  EXPECT_GT(bounds.back(), 60.0);
  mlagpt::monitoring::PrometheusExporter exporter("127.0.0.1:0");
  mlagpt::monitoring::PrometheusSink sink(exporter.registry(), kIdentity);
  for (const double seconds : {0.004, 0.004, 0.2}) {
    sink.record(StepMetrics{.step = 1, .step_seconds = seconds});
  }
  const std::string body = mlagpt::testing::http_get(exporter.port(), "/metrics");
  // Cumulative counts by upper bound: 0.004 s lies between 1e-3 * 1.5^3 and 1e-3 * 1.5^4.
  std::vector<std::pair<double, double>> buckets;  // (le, count), +Inf as infinity
  const std::regex bucket(R"re(mlagpt_step_seconds_bucket\{[^}]*le="([^"]+)"\} (\S+))re");
  for (auto it = std::sregex_iterator(body.begin(), body.end(), bucket); it != std::sregex_iterator(); ++it) {
    const std::string le = (*it)[1].str();
    buckets.emplace_back(le == "+Inf" ? std::numeric_limits<double>::infinity() : std::stod(le),
                         std::stod((*it)[2].str()));
  }
  ASSERT_EQ(buckets.size(), bounds.size() + 1) << body;
  for (const auto& [le, count] : buckets) {
    const double expected = le < 0.004 ? 0 : (le < 0.2 ? 2 : 3);
    EXPECT_EQ(count, expected) << "le " << le << "\n" << body;
  }
}

TEST(PrometheusSink, RuntimeTotalsBecomeCountersThatOnlyRise) {
  mlagpt::monitoring::PrometheusExporter exporter("127.0.0.1:0");
  mlagpt::monitoring::PrometheusSink sink(exporter.registry(), kIdentity);
  mlagpt::monitoring::RuntimeMetrics runtime{
      .data_wait_seconds_total = 0.5,
      .collectives = {{.group = "dp", .op = "all_reduce", .count = 3, .bytes = 3000, .seconds = 0.25},
                      {.group = "tp", .op = "all_gather", .count = 1, .bytes = 64, .seconds = 0.125}},
      .memory_allocated_bytes = 1000,
      .memory_reserved_bytes = 3000,
      .memory_peak_bytes = 5000,
      .model_parameters = 123456};
  sink.record(runtime);
  runtime.data_wait_seconds_total = 0.75;
  runtime.collectives[0] = {.group = "dp", .op = "all_reduce", .count = 5, .bytes = 5000, .seconds = 0.5};
  runtime.memory_allocated_bytes = 2000;
  sink.record(runtime);
  const std::string body = mlagpt::testing::http_get(exporter.port(), "/metrics");
  for (const std::string& line :
       {"mlagpt_data_wait_seconds_total{" + kLabels + "} 0.75", "mlagpt_model_parameters{" + kLabels + "} 123456",
        "mlagpt_collectives_total{" +
            std::string(R"(dp_rank="1",job="tiny-mla",rank="3",tp_rank="1",group="dp",op="all_reduce"} 5)"),
        "mlagpt_collective_bytes_total{" +
            std::string(R"(dp_rank="1",job="tiny-mla",rank="3",tp_rank="1",group="dp",op="all_reduce"} 5000)"),
        "mlagpt_collective_seconds_total{" +
            std::string(R"(dp_rank="1",job="tiny-mla",rank="3",tp_rank="1",group="dp",op="all_reduce"} 0.5)"),
        "mlagpt_collective_seconds_total{" +
            std::string(R"(dp_rank="1",job="tiny-mla",rank="3",tp_rank="1",group="tp",op="all_gather"} 0.125)"),
        "mlagpt_device_memory_allocated_bytes{" +
            std::string(R"(dp_rank="1",job="tiny-mla",rank="3",tp_rank="1",device="cpu"} 2000)"),
        "mlagpt_device_memory_reserved_bytes{" +
            std::string(R"(dp_rank="1",job="tiny-mla",rank="3",tp_rank="1",device="cpu"} 3000)"),
        "mlagpt_device_memory_peak_bytes{" +
            std::string(R"(dp_rank="1",job="tiny-mla",rank="3",tp_rank="1",device="cpu"} 5000)")}) {
    EXPECT_TRUE(has_line(body, line)) << line << "\n" << body;
  }
}
