// How this process's host allocator (glibc malloc) treats memory that tensors free.
//
// A training step allocates and frees the same activation-sized blocks (hundreds of KiB to MiB on the CPU) every
// micro-batch. glibc's defaults serve blocks above a threshold from fresh mmap()s and return the free top of the
// heap to the kernel, so each step pays page faults and zeroed pages for memory it just had: 10% of a nanoGPT-sized
// CPU step (BENCHMARKS.md). keep_freed_host_memory() raises the mmap threshold to glibc's maximum (32 MiB) and the
// trim threshold to 1 GiB, so freed blocks are reused as PyTorch's caching allocator reuses device memory; the
// process keeps its peak heap. Called first thing by `mlagpt` and the training benchmarks. Returns false (and
// changes nothing) when the user set malloc's own tunables (GLIBC_TUNABLES with glibc.malloc, MALLOC_*_ variables),
// which then win.
#pragma once

namespace mlagpt::launch {

bool keep_freed_host_memory();

}  // namespace mlagpt::launch
