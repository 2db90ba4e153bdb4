#include "monitoring/prometheus_exporter.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <array>
#include <charconv>

#include "launch/error.h"

namespace mlagpt::monitoring {
namespace {

// civetweb (1.15) cannot listen on port 0, so an ephemeral port is picked the usual way: bind a socket to port 0,
// read the port the kernel chose, and release it for the exposer. Another process could take it in between; that
// window is a few microseconds on a test machine.
std::string with_ephemeral_port(const std::string& bind_address) {
  const auto colon = bind_address.rfind(':');
  if (colon == std::string::npos || bind_address.substr(colon + 1) != "0") {
    return bind_address;
  }
  const std::string host = bind_address.substr(0, colon);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  if (host.empty() || inet_pton(AF_INET, host.c_str(), &address.sin_addr) != 1) {
    throw ConfigError(fmt::format("metrics: '{}' needs an IPv4 address before ':0'", bind_address));
  }
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  socklen_t length = sizeof(address);
  const bool ok = fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  if (fd >= 0) {
    close(fd);
  }
  if (!ok) {
    throw ConfigError(fmt::format("metrics: cannot find a free port on '{}'", host));
  }
  return fmt::format("{}:{}", host, ntohs(address.sin_port));
}

}  // namespace

PrometheusExporter::PrometheusExporter(const std::string& bind_address)
    : registry_(std::make_shared<prometheus::Registry>()) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(with_ephemeral_port(bind_address), /*num_threads=*/1);
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    throw ConfigError(fmt::format(
        "metrics: cannot listen on '{}' (monitoring.metrics_address: a port another process holds, or an address this "
        "host does not have): {}",
        bind_address, e.what()));
  }
  exposer_->RegisterCollectable(registry_);
}

namespace {

// The first IPv4 address of `host` (a name or a dotted address).
std::string ipv4_of(const std::string& host, const std::string& bind_address) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (rc != 0 || found == nullptr) {
    throw ConfigError(fmt::format("monitoring.metrics_address '{}': this node's host name '{}' does not resolve: {}",
                                  bind_address, host, gai_strerror(rc)));
  }
  std::array<char, INET_ADDRSTRLEN> text{};
  inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr, text.data(), text.size());
  freeaddrinfo(found);
  return text.data();
}

}  // namespace

std::string rank_bind_address(const std::string& bind_address, int local_rank, const std::string& host) {
  const auto colon = bind_address.rfind(':');
  int port = -1;
  if (colon != std::string::npos) {
    const std::string digits = bind_address.substr(colon + 1);
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
    if (error != std::errc() || end != digits.data() + digits.size() || digits.empty()) {
      port = -1;
    }
  }
  if (port < 0 || port > 65535) {
    throw ConfigError(
        fmt::format("monitoring.metrics_address '{}' is not 'host:port' with a port in [0, 65535]", bind_address));
  }
  std::string bind_host = bind_address.substr(0, colon);
  if (bind_host.empty()) {  // ":9400": this machine only; every interface is an explicit "0.0.0.0:9400"
    bind_host = "127.0.0.1";
  } else if (bind_host == "{host}") {
    bind_host = ipv4_of(host, bind_address);
  }
  if (port == 0) {
    return fmt::format("{}:0", bind_host);
  }
  if (port + local_rank > 65535) {
    throw ConfigError(fmt::format("monitoring.metrics_address '{}': local rank {} would need port {}, above 65535",
                                  bind_address, local_rank, port + local_rank));
  }
  return fmt::format("{}:{}", bind_host, port + local_rank);
}

uint16_t PrometheusExporter::port() const {
  const std::vector<int> ports = exposer_->GetListeningPorts();
  if (ports.empty()) {
    throw Error("metrics: the exporter is not listening on any port");
  }
  return static_cast<uint16_t>(ports.front());
}

std::string prometheus_cpp_version() {
  return MLAGPT_PROMETHEUS_CPP_VERSION;
}

}  // namespace mlagpt::monitoring
