#include "data/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

#include "launch/error.h"

namespace mlagpt::data {
namespace {

std::string system_reason() {
  return std::strerror(errno);
}

// Closes a file descriptor when it goes out of scope.
struct FileDescriptor {
  int fd = -1;
  ~FileDescriptor() {
    if (fd >= 0) {
      ::close(fd);
    }
  }
};

}  // namespace

std::string read_file(const std::filesystem::path& path) {
  FileDescriptor file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (file.fd < 0) {
    throw IoError(fmt::format("{}: cannot open: {}", path.string(), system_reason()));
  }
  std::string bytes;
  struct stat status {};
  if (::fstat(file.fd, &status) == 0 && status.st_size > 0) {
    bytes.reserve(static_cast<size_t>(status.st_size));
  }
  // A read loop rather than a size query: it also works for pipes and /proc files, and for files that grow.
  char block[1 << 16];
  for (;;) {
    const ssize_t n = ::read(file.fd, block, sizeof(block));
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      throw IoError(fmt::format("{}: read failed: {}", path.string(), system_reason()));
    }
    if (n == 0) {
      return bytes;
    }
    bytes.append(block, static_cast<size_t>(n));
  }
}

void fsync_file(const std::filesystem::path& path) {
  FileDescriptor handle{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (handle.fd < 0 || ::fsync(handle.fd) != 0) {
    throw IoError(fmt::format("{}: cannot sync the file: {}", path.string(), system_reason()));
  }
}

void fsync_directory(const std::filesystem::path& dir) {
  const std::filesystem::path target = dir.empty() ? std::filesystem::path(".") : dir;
  FileDescriptor handle{::open(target.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (handle.fd < 0 || ::fsync(handle.fd) != 0) {
    throw IoError(fmt::format("{}: cannot sync the directory: {}", target.string(), system_reason()));
  }
}

void write_file_atomically(const std::filesystem::path& path, std::string_view bytes) {
  std::filesystem::path temporary = path;
  temporary += fmt::format(".tmp-{}", ::getpid());
  {
    FileDescriptor file{::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
    if (file.fd < 0) {
      throw IoError(fmt::format("{}: cannot create: {}", temporary.string(), system_reason()));
    }
    size_t written = 0;
    while (written < bytes.size()) {
      const ssize_t n = ::write(file.fd, bytes.data() + written, bytes.size() - written);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0) {
        const std::string reason = system_reason();
        ::unlink(temporary.c_str());
        throw IoError(fmt::format("{}: write failed: {}", temporary.string(), reason));
      }
      written += static_cast<size_t>(n);
    }
    if (::fsync(file.fd) != 0) {
      const std::string reason = system_reason();
      ::unlink(temporary.c_str());
      throw IoError(fmt::format("{}: fsync failed: {}", temporary.string(), reason));
    }
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const std::string reason = system_reason();
    ::unlink(temporary.c_str());
    throw IoError(
        fmt::format("{}: cannot rename {} onto it: {}", path.string(), temporary.filename().string(), reason));
  }
  fsync_directory(path.parent_path());
}

}  // namespace mlagpt::data
