// The memory a rank's device holds, for the mlagpt_device_memory_* gauges.
//
// CUDA: PyTorch's caching allocator for that device (c10::CachingDeviceAllocator::DeviceStats, what
// torch.cuda.memory_allocated / memory_reserved / max_memory_allocated read): allocated = bytes in live tensors,
// reserved = bytes the allocator holds from the driver (allocated + its cache), peak = the most ever allocated.
// CPU: the process as the C library and the kernel see it: allocated = bytes malloc has handed out and not taken
// back (glibc mallinfo2: uordblks + hblkhd; tensors and everything else), reserved = the resident set (VmRSS),
// peak = the largest resident set so far (VmHWM).
#pragma once

#include <c10/core/Device.h>

#include <cstdint>

namespace mlagpt::monitoring {

struct DeviceMemory {
  int64_t allocated_bytes = 0;
  int64_t reserved_bytes = 0;
  int64_t peak_bytes = 0;
};

DeviceMemory device_memory(const c10::Device& device);

}  // namespace mlagpt::monitoring
