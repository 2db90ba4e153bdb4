// prometheus-cpp end to end: an exporter on an ephemeral loopback port serves a counter, and a plain HTTP GET of
// /metrics (over a socket of our own, as a Prometheus server would do it) finds its value.
#include "monitoring/prometheus_exporter.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <prometheus/counter.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "launch/error.h"

namespace {

std::string http_get(uint16_t port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    return "";
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t n = 0;
      while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) {
        response.append(buffer, static_cast<size_t>(n));
      }
    }
  }
  close(fd);
  return response;
}

}  // namespace

TEST(PrometheusExporter, ServesACounterOnAnEphemeralPort) {
  mlagpt::monitoring::PrometheusExporter exporter("127.0.0.1:0");
  const uint16_t port = exporter.port();
  EXPECT_GT(port, 0);
  auto& family = prometheus::BuildCounter()
                     .Name("mlagpt_test_tokens_total")
                     .Help("Tokens counted by the exporter test")
                     .Register(exporter.registry());
  family.Add({{"rank", "0"}}).Increment(4096);
  const std::string response = http_get(port, "/metrics");
  EXPECT_NE(response.find("200 OK"), std::string::npos) << response;
  EXPECT_NE(response.find("# TYPE mlagpt_test_tokens_total counter"), std::string::npos) << response;
  EXPECT_NE(response.find("mlagpt_test_tokens_total{rank=\"0\"} 4096"), std::string::npos) << response;
}

TEST(PrometheusExporter, BadAddressIsAConfigError) {
  EXPECT_THROW(mlagpt::monitoring::PrometheusExporter("not-an-address:xyz"), mlagpt::ConfigError);
}
