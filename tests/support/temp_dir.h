// A fresh directory under the system temp dir, removed with everything in it when the object goes away.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>

namespace mlagpt::testing {

class TempDir {
 public:
  TempDir() {
    std::random_device random;
    path_ = std::filesystem::temp_directory_path() /
            ("mlagpt-test-" + std::to_string(::getpid()) + "-" + std::to_string(random()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// The whole response (headers and body) of `GET path` from host:port (an IPv4 address) over HTTP/1.0; "" when
// unreachable.
std::string http_get(uint16_t port, const std::string& path, const std::string& host = "127.0.0.1");

// Runs a shell command and returns its standard output (and its exit status through `status`).
std::string run_command(const std::string& command, int* status = nullptr);

// What a command printed and how it ended.
struct CommandOutput {
  int status = -1;  // exit status; -1 when it did not exit normally
  std::string out;  // standard output
  std::string err;  // standard error (the logs)
};

// Runs a shell command with its standard error sent to `err_file`, which is read back into the result.
CommandOutput run_capturing(const std::string& command, const std::filesystem::path& err_file);

}  // namespace mlagpt::testing
