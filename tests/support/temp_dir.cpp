#include "support/temp_dir.h"

#include <sys/wait.h>
#include <cstdio>
#include <memory>

namespace mlagpt::testing {

std::string run_command(const std::string& command, int* status) {
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    if (status != nullptr) {
      *status = -1;
    }
    return output;
  }
  char buffer[4096];
  size_t n = 0;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) {
    output.append(buffer, n);
  }
  const int raw = pclose(pipe);
  if (status != nullptr) {
    *status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  }
  return output;
}

}  // namespace mlagpt::testing
