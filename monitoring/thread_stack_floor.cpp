// Debian's civetweb (under prometheus-cpp's Exposer) starts its threads with a fixed 100 KiB stack
// (USE_STACK_SIZE). glibc refuses such a thread with EINVAL when the process's static TLS does not fit in it, and
// a process that loads LibTorch with CUDA carries about 150 KiB of static TLS (cuBLASLt alone 94 KiB), so the
// exporter could never start. This definition, exported from every executable that links the monitoring library,
// interposes pthread_attr_setstacksize for the whole process and raises requests below 1 MiB to 1 MiB; larger
// requests pass through unchanged. tests/monitoring/prometheus_exporter_test fails without it.
#include <dlfcn.h>
#include <pthread.h>

#include <algorithm>
#include <cstddef>

namespace {
constexpr size_t kMinimumThreadStackBytes = size_t{1} << 20;
}

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t size) {
  using Function = int (*)(pthread_attr_t*, size_t);
  static const auto next = reinterpret_cast<Function>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  return next(attr, std::max(size, kMinimumThreadStackBytes));
}
