// prometheus-cpp end to end: an exporter on an ephemeral loopback port serves a counter, and a plain HTTP GET of
// /metrics (over a socket of our own, as a Prometheus server would do it) finds its value.
#include "monitoring/prometheus_exporter.h"

#include <gtest/gtest.h>
#include <prometheus/counter.h>

#include <string>

#include "launch/error.h"
#include "support/temp_dir.h"

TEST(PrometheusExporter, ServesACounterOnAnEphemeralPort) {
  mlagpt::monitoring::PrometheusExporter exporter("127.0.0.1:0");
  const uint16_t port = exporter.port();
  EXPECT_GT(port, 0);
  auto& family = prometheus::BuildCounter()
                     .Name("mlagpt_test_tokens_total")
                     .Help("Tokens counted by the exporter test")
                     .Register(exporter.registry());
  family.Add({{"rank", "0"}}).Increment(4096);
  const std::string response = mlagpt::testing::http_get(port, "/metrics");
  EXPECT_NE(response.find("200 OK"), std::string::npos) << response;
  EXPECT_NE(response.find("# TYPE mlagpt_test_tokens_total counter"), std::string::npos) << response;
  EXPECT_NE(response.find("mlagpt_test_tokens_total{rank=\"0\"} 4096"), std::string::npos) << response;
}

TEST(PrometheusExporter, BadAddressIsAConfigError) {
  EXPECT_THROW(mlagpt::monitoring::PrometheusExporter("not-an-address:xyz"), mlagpt::ConfigError);
}

TEST(PrometheusExporter, EachRankOfANodeGetsAPortOfItsOwn) {
  using mlagpt::monitoring::rank_bind_address;
  EXPECT_EQ(rank_bind_address("0.0.0.0:9400", 0), "0.0.0.0:9400");
  EXPECT_EQ(rank_bind_address("0.0.0.0:9400", 7), "0.0.0.0:9407");
  EXPECT_EQ(rank_bind_address("127.0.0.1:0", 3), "127.0.0.1:0") << "an ephemeral port stays ephemeral";
  EXPECT_EQ(rank_bind_address(":9400", 1), "127.0.0.1:9401") << "no host: loopback only";
  for (const char* bad : {"9400", "host:", "host:94x0", "host:-1", "host:70000"}) {
    try {
      rank_bind_address(bad, 0);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const mlagpt::ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(rank_bind_address("0.0.0.0:65535", 1), mlagpt::ConfigError);
}

TEST(PrometheusExporter, HostPlaceholderIsTheNodesOwnAddress) {
  using mlagpt::monitoring::rank_bind_address;
  EXPECT_EQ(rank_bind_address("{host}:9400", 1, "127.0.0.3"), "127.0.0.3:9401");
  EXPECT_EQ(rank_bind_address("{host}:0", 1, "localhost"), "127.0.0.1:0");
  try {
    rank_bind_address("{host}:9400", 0, "no-such-host.invalid");
    ADD_FAILURE() << "an unresolvable host was accepted";
  } catch (const mlagpt::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("no-such-host.invalid"), std::string::npos) << e.what();
  }
}
