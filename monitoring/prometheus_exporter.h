// PrometheusExporter: serves this rank's metrics over HTTP at /metrics for a Prometheus server to scrape.
//
// Owns a prometheus-cpp registry and an Exposer (civetweb) bound to `bind_address` ("0.0.0.0:9400", or
// "127.0.0.1:0" for an ephemeral port, which tests use). Families are added to registry(); prometheus-cpp's
// counters and gauges are thread-safe, and the exposer serves from its own threads.
#pragma once

#include <prometheus/exposer.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <memory>
#include <string>

namespace mlagpt::monitoring {

class PrometheusExporter {
 public:
  explicit PrometheusExporter(const std::string& bind_address);
  PrometheusExporter(const PrometheusExporter&) = delete;
  PrometheusExporter& operator=(const PrometheusExporter&) = delete;

  prometheus::Registry& registry() { return *registry_; }
  // The port actually bound (the ephemeral one when 0 was asked for).
  uint16_t port() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

// The address a rank's exporter binds: `bind_address` ("host:port") with the port moved up by the rank's index on
// its node, so that the processes of one node (one per GPU) each get a port of their own: 9400, 9401, ... Port 0
// (ephemeral) stays 0. No host (":9400") is loopback, 127.0.0.1: serving every interface is the explicit
// "0.0.0.0:9400". A host of "{host}" is this node's own address: `host` (its hostname) resolved to IPv4, so
// that every node's ranks listen on the address their targets name (and several simulated nodes of one machine, each
// with a loopback address of its own, can use the same ports). Throws ConfigError naming `bind_address` when it has
// no port, the port would pass 65535, or "{host}" does not resolve.
std::string rank_bind_address(const std::string& bind_address, int local_rank, const std::string& host = "");

// The prometheus-cpp version this build was compiled against.
std::string prometheus_cpp_version();

}  // namespace mlagpt::monitoring
