// Not a test of its own: check_skip_policy.sh runs it with --gtest_filter to check how a skip reaches CTest
// (support/gtest_main.cpp, support/prerequisites.h). Fails, Skips and the two prerequisite cases are chosen
// one combination at a time; run unfiltered, Probe.Fails fails by design.
#include <gtest/gtest.h>

#include "support/prerequisites.h"

TEST(Probe, Passes) {
  EXPECT_EQ(1 + 1, 2);
}

TEST(Probe, Fails) {
  ADD_FAILURE() << "the probe's failing test";
}

TEST(Probe, Skips) {
  GTEST_SKIP() << "the probe's skipping test";
}

TEST(Probe, MissingInstall) {
  MLAGPT_REQUIRE_INSTALLED(false, "a prerequisite setup installs");
}

TEST(Probe, MissingGpu) {
  MLAGPT_REQUIRE_GPU(false, "a CUDA device");
}
