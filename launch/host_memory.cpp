#include "launch/host_memory.h"

#include <malloc.h>

#include <cstdlib>
#include <string_view>

namespace mlagpt::launch {

bool keep_freed_host_memory() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if ((tunables != nullptr && std::string_view(tunables).find("glibc.malloc.") != std::string_view::npos) ||
      std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr || std::getenv("MALLOC_TRIM_THRESHOLD_") != nullptr) {
    return false;
  }
  constexpr int kMmapThreshold = 32 << 20;  // glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
  constexpr int kTrimThreshold = 1 << 30;
  // Setting either one also stops glibc from adjusting the other on its own (its dynamic threshold).
  return mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1 && mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1;
}

}  // namespace mlagpt::launch
