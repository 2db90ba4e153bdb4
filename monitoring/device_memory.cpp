#include "monitoring/device_memory.h"

#include <c10/core/CachingDeviceAllocator.h>
#include <malloc.h>

#include <fstream>
#include <string>

namespace mlagpt::monitoring {
namespace {

// A "Vm...:  123 kB" line of /proc/self/status, in bytes; 0 where the kernel does not report it.
int64_t proc_status_bytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string name;
  while (status >> name) {
    if (name == field + ":") {
      int64_t kib = 0;
      status >> kib;
      return kib * 1024;
    }
    status.ignore(4096, '\n');
  }
  return 0;
}

}  // namespace

DeviceMemory device_memory(const c10::Device& device) {
  if (device.is_cpu()) {
    const struct mallinfo2 info = mallinfo2();
    return {.allocated_bytes = static_cast<int64_t>(info.uordblks + info.hblkhd),
            .reserved_bytes = proc_status_bytes("VmRSS"),
            .peak_bytes = proc_status_bytes("VmHWM")};
  }
  const c10::CachingDeviceAllocator::DeviceStats stats =
      c10::getDeviceAllocator(device.type())->getDeviceStats(device.has_index() ? device.index() : 0);
  const auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  return {.allocated_bytes = stats.allocated_bytes[aggregate].current,
          .reserved_bytes = stats.reserved_bytes[aggregate].current,
          .peak_bytes = stats.allocated_bytes[aggregate].peak};
}

}  // namespace mlagpt::monitoring
