// Metrics sinks: the JSONL file gets one parseable line per record and keeps earlier lines when reopened (a resumed
// run); the Prometheus sink's values are served by the exporter under the names of docs/design.md ("Metrics").
#include "monitoring/metrics_sink.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

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
  }
  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(nlohmann::json::parse(line));
  }
  ASSERT_EQ(lines.size(), 3U);
  EXPECT_EQ(lines[0]["step"], 1);
  EXPECT_EQ(lines[0]["tokens"], 2048);
  EXPECT_FALSE(lines[0].contains("mfu"));
  EXPECT_DOUBLE_EQ(lines[1]["mfu"].get<double>(), 0.4);
  EXPECT_EQ(lines[2]["kind"], "eval");
  EXPECT_DOUBLE_EQ(lines[2]["val_loss"].get<double>(), 4.0);
}

TEST(PrometheusSink, ServesTrainingMetrics) {
  mlagpt::monitoring::PrometheusExporter exporter("127.0.0.1:0");
  mlagpt::monitoring::PrometheusSink sink(exporter.registry(), 3);
  sink.record(StepMetrics{.step = 7, .loss = 2.5, .tokens = 1000, .tokens_per_second = 500});
  sink.record(StepMetrics{.step = 8, .loss = 2.25, .tokens = 1000, .tokens_per_second = 600});
  sink.record(EvalMetrics{.step = 8, .loss = 2.75});
  const std::string body = mlagpt::testing::http_get(exporter.port(), "/metrics");
  EXPECT_NE(body.find("mlagpt_train_step{rank=\"3\"} 8"), std::string::npos) << body;
  EXPECT_NE(body.find("mlagpt_train_loss{rank=\"3\"} 2.25"), std::string::npos) << body;
  EXPECT_NE(body.find("mlagpt_tokens_total{rank=\"3\"} 2000"), std::string::npos) << body;
  EXPECT_NE(body.find("mlagpt_steps_total{rank=\"3\"} 2"), std::string::npos) << body;
  EXPECT_NE(body.find("mlagpt_eval_loss{rank=\"3\"} 2.75"), std::string::npos) << body;
}
