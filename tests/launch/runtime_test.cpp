// The process's share of the node's CPUs: the affinity mask's count, and the intra-op threads that `run.threads = 0`
// gives each of the ranks on a node.
#include "launch/runtime.h"

#include <gtest/gtest.h>
#include <sched.h>

using mlagpt::launch::available_cpus;
using mlagpt::launch::threads_per_process;

TEST(ThreadsPerProcess, DividesTheCpusAmongTheRanksOnTheNode) {
  EXPECT_EQ(threads_per_process(16, 1), 16);
  EXPECT_EQ(threads_per_process(16, 4), 4);
  EXPECT_EQ(threads_per_process(2, 2), 1);   // two ranks on two cores: one thread each, not two
  EXPECT_EQ(threads_per_process(12, 5), 2);  // rounded down: 5 x 2 <= 12
  EXPECT_EQ(threads_per_process(1, 4), 1);   // bound to one core each (mpirun --bind-to core): still one thread
  EXPECT_EQ(threads_per_process(8, 0), 8);   // no local size known: this process alone
}

// available_cpus() is what the affinity mask leaves the process (taskset, cgroups, mpirun's binding), not the
// machine's count.
TEST(AvailableCpus, CountsTheAffinityMask) {
  cpu_set_t original;
  ASSERT_EQ(sched_getaffinity(0, sizeof(original), &original), 0);
  EXPECT_EQ(available_cpus(), CPU_COUNT(&original));
  int first = 0;
  while (!CPU_ISSET(first, &original)) {
    ++first;
  }
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);
  const int bound = available_cpus();
  ASSERT_EQ(sched_setaffinity(0, sizeof(original), &original), 0);
  EXPECT_EQ(bound, 1);
}
